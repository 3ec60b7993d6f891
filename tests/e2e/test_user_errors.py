"""User mistakes through the real CLI: one line `testfleet: error: ...`, exit code 2, no
traceback, found before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from tests.helpers import run_cli, write_pyproject

pytestmark = pytest.mark.e2e

LANES_RULE = 'must be a whole number of lanes from 1 to 64, or "auto"'


class Mistake(NamedTuple):
    body: str  # the [tool.testfleet] part of pyproject.toml
    args: tuple[str, ...]
    expect: str  # a substring of the one error line
    env: dict[str, str] = {}  # noqa: RUF012 - a NamedTuple default, never mutated


VALKEY = "[tool.testfleet.services.valkey]\n"
MISTAKES = {
    # values
    "lanes-word": Mistake("lanes = 'four'\n", ("run",), f"tool.testfleet.lanes: {LANES_RULE}"),
    "lanes-bool": Mistake("lanes = true\n", ("run",), "tool.testfleet.lanes: must be"),
    "lanes-flag-word": Mistake("", ("run", "-n", "abc"), f"argument -n/--lanes: {LANES_RULE}"),
    "lanes-flag-500": Mistake("", ("run", "-n", "500"), "from 1 to 64"),
    "plan-lanes-huge": Mistake("", ("plan", "-n", "100000"), "argument -n/--lanes: must be"),
    "lanes-env": Mistake(
        "", ("run",), "TESTFLEET_LANES='many': must be", {"TESTFLEET_LANES": "many"}
    ),
    "timeout-flag": Mistake("", ("run", "--timeout", "soon"), "argument --timeout: must be"),
    "test-timeout-flag": Mistake("", ("run", "--test-timeout", "-1"), "--test-timeout: must be"),
    "fail-under-flag": Mistake("", ("run", "--coverage-fail-under", "x"), "percentage from 0"),
    "group-by-flag": Mistake("", ("run", "--group-by", "bogus"), "module, class, test"),
    "timeout-bool": Mistake("timeout = true\n", ("run",), "tool.testfleet.timeout: must be"),
    # placeholders
    "unclosed-brace": Mistake(
        "env = { A = '{lane' }\n", ("run",), "tool.testfleet.env.A: unclosed '{'"
    ),
    "lone-brace": Mistake(
        "pytest-args = ['-k', 'x}']\n", ("run",), "tool.testfleet.pytest-args[1]: a lone '}'"
    ),
    "ready-command-typo": Mistake(
        "[tool.testfleet.services.api]\nkind = 'command'\ncommand = 'serve {port}'\n"
        "ready = { command = 'probe {uri}' }\n",
        ("run",),
        "services.api.ready.command: unknown placeholder {uri}",
    ),
    "setup-typo": Mistake(
        "[tool.testfleet.services.postgres]\nsetup = 'migrate {urll}'\n",
        ("run",),
        "services.postgres.setup: unknown placeholder {urll}",
    ),
    # lanes the services cannot serve, refused before any of them starts
    "valkey-17-lanes": Mistake(
        VALKEY + "isolation = 'database'\n",
        ("run", "-n", "17"),
        'services.valkey.isolation = "database": each lane takes one of',
    ),
    "fixed-port-2-lanes": Mistake(
        VALKEY + "port = 6379\n",
        ("run", "-n", "2"),
        "services.valkey.port = 6379: every lane starts its own valkey server",
    ),
    "pghost-collision": Mistake(
        "[tool.testfleet.services.postgres]\n[tool.testfleet.services.db2]\nkind = 'postgres'\n"
        "export = { PGHOST = '{host}' }\n",
        ("run",),
        "db2.export: PGHOST is exported by postgres by default too",
    ),
    # paths
    "python-missing": Mistake(
        "", ("run", "--python", "/missing"), "--python /missing: no such interpreter"
    ),
    "python-env-plan": Mistake(
        "", ("plan",), "TESTFLEET_PYTHON=/missing: no such", {"TESTFLEET_PYTHON": "/missing"}
    ),
    "junit-directory": Mistake("", ("run", "--junit-xml", "/"), "--junit-xml /: / is a directory"),
    "junit-uncreatable": Mistake(
        "", ("run", "--junit-xml", "/proc/x/y"), "--junit-xml /proc/x/y: cannot create /proc/x"
    ),
    "coverage-xml-directory": Mistake(
        "", ("run", "--coverage", "--coverage-xml", "/"), "--coverage-xml /: / is a directory"
    ),
    "durations-directory": Mistake(
        "durations = '/'\n", ("plan",), "tool.testfleet.durations = '/': / is a directory"
    ),
    "dotenv-directory": Mistake("", ("up", "--dotenv", "/"), "--dotenv /: / is a directory"),
    "run-dir-file": Mistake("", ("run", "--run-dir", "pyproject.toml"), "is not a directory"),
    "run-dir-uncreatable": Mistake(
        "", ("up", "--run-dir", "/proc/x"), "--run-dir /proc/x: cannot create /proc/x"
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_mistake_is_one_line_exit_2(tmp_path: Path, mistake: Mistake):
    """Each mistake is one `testfleet: error:` line naming the key, exit 2, before any start."""
    write_pyproject(tmp_path, "[tool.testfleet]\n" + mistake.body)
    result = run_cli(*mistake.args, cwd=tmp_path, env=mistake.env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "stack ready" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("testfleet: error: ")
    assert mistake.expect in lines[0]


def test_non_utf8_pyproject_is_one_line(tmp_path: Path):
    """A pyproject.toml saved in Latin-1 names the file instead of an internal error."""
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.testfleet]\n# caf\xe9\n")
    result = run_cli("run", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (
        f"testfleet: error: {tmp_path / 'pyproject.toml'}: not UTF-8 (byte 0xe9 at offset 22);"
        " TOML files must be UTF-8, so save it as UTF-8\n"
    )
