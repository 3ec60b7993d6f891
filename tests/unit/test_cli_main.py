"""The CLI in-process (`main(argv)` + capsys) for everything that starts nothing: user mistakes
are one line `testfleet: error: ...` and exit 2, found before anything starts; the parser and
its --help; `ci`. What only a real process shows is in tests/e2e."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from testfleet.cli import main
from testfleet.options import OPTIONS, RUN, UP, options_of
from testfleet.runtime import Run
from tests.helpers import write_pyproject

LANES_RULE = 'must be a whole number of lanes from 1 to 64, or "auto"'
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def process_left_as_found() -> Iterator[None]:
    """Fails a test that leaves the process changed: signal handlers, cwd, environment. (Set
    up before monkeypatch, so its check runs after monkeypatch has undone its changes.)"""
    before = ({s: signal.getsignal(s) for s in SIGNALS}, os.getcwd(), environ())
    yield
    handlers, cwd, env = before
    assert {s: signal.getsignal(s) for s in SIGNALS} == handlers
    assert os.getcwd() == cwd
    assert environ() == env


def environ() -> dict[str, str]:
    """os.environ, but for the variable pytest itself changes between a test's phases."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture(autouse=True)
def nothing_starts(process_left_as_found: None, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A run or a process started by the CLI fails the test (as an internal error, exit 3);
    the TESTFLEET_* variables of the shell running the tests are not read."""
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    started: list[Any] = []

    def refuse(what: str) -> Any:
        def refused(self: object, *args: Any, **kwargs: Any) -> None:
            started.append((what, args, kwargs))
            raise AssertionError(f"the CLI started {what}: {args}")

        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("a process"))
    monkeypatch.setattr(Run, "__init__", refuse("a run"))
    return started


def cli(project: Path, *args: str) -> int:
    return main(["-C", str(project), *args])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a user error prints on stderr, without its `testfleet: error: ` prefix."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "stack ready" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("testfleet: error: "), err
    return lines[0].removeprefix("testfleet: error: ")


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
        "[tool.testfleet.services.postgres]\nexport = ['libpq']\n[tool.testfleet.services.db2]\n"
        "kind = 'postgres'\nexport = { PGHOST = '{host}' }\n",
        ("run",),
        "db2.export: PGHOST is exported by postgres too",
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
    # --with: kinds started with their defaults
    "with-unknown-kind": Mistake(
        "",
        ("run", "--with", "postgres,mysql"),
        "argument --with: 'mysql' is not a service kind (kinds: postgres, mongodb, valkey,"
        " redis, nats, vault, neo4j) (got 'postgres,mysql')",
    ),
    "with-command": Mistake(
        "", ("up", "--with", "command"), "argument --with: a command service needs its command"
    ),
    "with-env-unknown-kind": Mistake(
        "",
        ("plan",),
        "TESTFLEET_WITH='valky': 'valky' is not a service kind",
        {"TESTFLEET_WITH": "valky"},
    ),
    "with-name-taken": Mistake(
        "[tool.testfleet.services.postgres]\nkind = 'command'\ncommand = 'serve {port}'\n",
        ("run", "--with", "postgres"),
        "--with postgres: tool.testfleet.services.postgres is a command service",
    ),
    "with-in-file": Mistake(
        "with = ['valkey']\n", ("run",), "tool.testfleet.with: only --with and TESTFLEET_WITH"
    ),
    "with-lanes-cap": Mistake(
        "",
        ("plan", "--with", "valkey", "--backend", "external", "-n", "17"),
        "each lane takes one of Valkey's 16 DB numbers",
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_mistake_is_one_line_exit_2(
    tmp_path: Path,
    mistake: Mistake,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    """Each mistake is one `testfleet: error:` line naming the key, exit 2, before any start."""
    write_pyproject(tmp_path, "[tool.testfleet]\n" + mistake.body)
    for name, value in mistake.env.items():
        monkeypatch.setenv(name, value)
    code = cli(tmp_path, *mistake.args)
    line = one_error_line(capsys)
    assert code == 2, line
    assert mistake.expect in line


def test_no_table_and_no_with_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A pyproject.toml without [tool.testfleet] names both fixes: the table, or --with."""
    write_pyproject(tmp_path, "")
    assert cli(tmp_path, "up") == 2
    assert one_error_line(capsys) == (
        f"{tmp_path / 'pyproject.toml'} has no [tool.testfleet] table; add one (see the"
        " README's example), or name the services to start with --with postgres,valkey"
        " (or TESTFLEET_WITH)"
    )


def test_merge_does_not_take_with(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """--with is for the commands that start or plan a stack."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    assert cli(tmp_path, "merge", "--with", "postgres") == 2
    assert "--with is for run, plan, up" in one_error_line(capsys)


def test_with_missing_driver_names_the_flag_and_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """An added service's driver is checked before anything starts, as a declared one's:
    the line names --with (the file has no such table) and the extra that brings it."""
    write_pyproject(tmp_path, "")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert cli(tmp_path, "run", "--with", "valkey,postgresql") == 2
    assert one_error_line(capsys) == (
        "--with postgres: PostgreSQL needs the psycopg driver next to testfleet;"
        " pip install 'testfleet[postgres]'"
    )


def test_with_from_the_env_var_reaches_every_command_that_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """TESTFLEET_WITH makes the config of a project without the table for run, up and plan
    alike (here each stops at the missing driver, before starting anything)."""
    write_pyproject(tmp_path, "")
    monkeypatch.setenv("TESTFLEET_WITH", "postgres")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    for command in ("run", "up"):
        assert cli(tmp_path, command) == 2
        assert one_error_line(capsys).startswith("TESTFLEET_WITH (postgres): PostgreSQL needs")


def test_non_utf8_pyproject_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A pyproject.toml saved in Latin-1 names the file instead of an internal error."""
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.testfleet]\n# caf\xe9\n")
    assert cli(tmp_path, "run") == 2
    assert capsys.readouterr().err == (
        f"testfleet: error: {tmp_path / 'pyproject.toml'}: not UTF-8 (byte 0xe9 at offset 22);"
        " TOML files must be UTF-8, so save it as UTF-8\n"
    )


def test_config_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A misspelt key is one line naming the full key and the likely one, exit 2."""
    write_pyproject(tmp_path, "[tool.testfleet.services.postgres]\nisolaton = 'server'\n")
    assert cli(tmp_path, "run") == 2
    assert capsys.readouterr().err == (
        "testfleet: error: unknown key"
        " tool.testfleet.services.postgres.isolaton;"
        " did you mean 'isolation'?\n"
    )


def test_missing_binary_is_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A configured binary that does not exist is a usage error naming it, before `up` starts."""
    write_pyproject(tmp_path, "[tool.testfleet.services.nats]\nbinary = '/nonexistent/nats'\n")
    code = cli(tmp_path, "up")
    line = one_error_line(capsys)
    assert code == 2, line
    assert "binary: /nonexistent/nats is not an executable NATS binary" in line


def test_bad_flag_value_is_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A flag value its parser refuses is one line naming the flag, exit 2."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    code = cli(tmp_path, "run", "--timeout", "soon")
    line = one_error_line(capsys)
    assert code == 2, line
    assert "--timeout" in line


@pytest.mark.parametrize(
    "args",
    [("--shard", "1/2"), ("--coverage",), ("--junit-xml", "x.xml")],
    ids=["shard", "coverage", "junit-xml"],
)
def test_up_refuses_an_option_it_does_not_read(
    tmp_path: Path, args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
):
    """`up` with a flag of an option only run reads is one line naming that flag and the
    commands that take it, exit 2."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    code = cli(tmp_path, "up", *args)
    line = one_error_line(capsys)
    assert code == 2, line
    assert f"`testfleet up` does not take {' '.join(args)}; {args[0]} is for run" in line
    assert line.endswith("(see testfleet up --help)")


def test_pytest_arguments_go_only_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Arguments after -- for a command other than run are one line naming them, exit 2."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    code = cli(tmp_path, "up", "--", "-x")
    line = one_error_line(capsys)
    assert code == 2, line
    assert "only 'run' starts: ['-x']" in line


def test_missing_project_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """-C naming no directory is one line naming it, exit 2."""
    code = cli(tmp_path / "nowhere", "run")
    line = one_error_line(capsys)
    assert code == 2, line
    assert line == f"-C {tmp_path / 'nowhere'}: no such directory"


def help_text(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """A command's --help, its lines joined as one (wrapping depends on the terminal)."""
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_run_help_shows_each_default_and_env_var(capsys: pytest.CaptureFixture[str]):
    """`run --help` names every option's default and env var beside its flag."""
    text = help_text(capsys, "run")
    assert "-n N, --lanes N parallel lanes" in text
    assert "default: 1; env TESTFLEET_LANES" in text
    for option in options_of(RUN):
        assert option.flag in text, option.flag
        assert f"default: {option.default_text}; env {option.env}" in text, option.key


def test_up_help_lists_only_what_up_reads(capsys: pytest.CaptureFixture[str]):
    """`up --help` lists the flags of the options up reads (with their env vars), no other."""
    text = help_text(capsys, "up")
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))
    assert flags == {"--help"} | {option.flag for option in options_of(UP)}
    assert "--shard" not in text
    for option in options_of(UP):
        assert f"env {option.env}" in text, option.key


@pytest.mark.parametrize(("system", "marker"), [("github", "jobs:"), ("gitlab", "stages:")])
def test_ci_files_come_from_the_cli(
    tmp_path: Path, system: str, marker: str, capsys: pytest.CaptureFixture[str]
):
    """`testfleet ci github|gitlab` is wired into the CLI and calls the laptop's command."""
    write_pyproject(tmp_path, "[tool.testfleet]\n[tool.testfleet.services.valkey]\n")
    # This checkout is an editable install: the files need to be told what CI installs.
    code = cli(tmp_path, "ci", system, "--stdout", "--testfleet-spec", "testfleet[valkey]==1.0")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert marker in out
    assert "testfleet run --shard" in out
    assert "testfleet merge" in out
