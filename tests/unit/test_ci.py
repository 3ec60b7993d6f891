"""`testfleet ci`: the YAML emitter, what the generated GitHub and GitLab files contain, and
that they pass actionlint and the workflows' JSON schemas (both validators ship in wheels)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from testfleet.ci import install, model, yamltext
from testfleet.cli import build_parser
from testfleet.commands import Call
from testfleet.commands import ci as ci_command
from testfleet.errors import ConfigError
from tests.helpers import EXAMPLE, REPO, write_pyproject

TINY = """
[tool.testfleet]
pytest-args = ["-q"]

[tool.testfleet.services.valkey]
"""
RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
# The validators come with the dev extra: look next to this interpreter first.
VENV_BIN = str(Path(sys.executable).parent)


def tool(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]))
    assert found, f"{name} is missing: install the dev extra (pip install -e '.[dev]')"
    return found


def parse_yaml(text: str, version: tuple[int, int] = (1, 2)) -> Any:
    yaml = YAML(typ="safe", pure=True)
    yaml.version = version
    return yaml.load(text)


def generate(root: Path, *argv: str) -> int:
    """`testfleet ci ARGV` in the project at `root`, parsed as the CLI parses it."""
    args = build_parser("ci").parse_args(["-C", str(root), "ci", *argv])
    return ci_command.main(Call(args))


def read(root: Path, relative: str) -> Any:
    return parse_yaml((root / relative).read_text())


@pytest.fixture(autouse=True)
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """This checkout runs from an editable install, which `testfleet ci` refuses to put in a
    file (tested below): here it stands for a release installed from an index."""

    def from_index(extras: Iterable[str]) -> install.InstallSpec:
        return install.InstallSpec(
            install.from_direct_url(None, "1.2.3", extras), "the testfleet that wrote this file"
        )

    monkeypatch.setattr(install, "installed", from_index)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_pyproject(tmp_path / "tiny", TINY)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The example project's configuration, in a directory the test may write into."""
    root = tmp_path / "bookshop"
    root.mkdir()
    shutil.copy(EXAMPLE / "pyproject.toml", root / "pyproject.toml")
    return root


# --- the emitter -------------------------------------------------------------------------

AWKWARD = [
    "",
    " leading space",
    "trailing space ",
    "on",
    "Yes",
    "NULL",
    "~",
    "3.10",
    "0o17",
    "1e3",
    "2024-01-01",
    "-",
    "- item",
    "a: b",
    "a #b",
    "#c",
    "[x]",
    "{x: 1}",
    "*alias",
    "&anchor",
    "!tag",
    "%directive",
    "@at",
    "`tick`",
    "|",
    ">",
    "?",
    ",",
    "${{ secrets.X }}",
    "it's",
    'say "hi"',
    "back\\slash",
    "tab\there",
    "bell\x07",
    "del\x7f",
    "nel\x85",
    "line\u2028sep",
    "bom\ufeff",
    "emoji 😀",
    "é",
    "multi\nline\n",
    "multi\nline",
    "two trailing\n\n",
    "\nleading newline",
    "  indented\nscript\n",
    "spaces at end \nof a line\n",
    "blank\n\nline\n",
    "cr\r\nlf\n",
]


def test_awkward_strings_read_back_unchanged():
    """Every string, as a value, a key and a list item, reads back exactly under YAML 1.2 and
    1.1 (bare words that 1.1 takes for booleans or numbers are quoted)."""
    document = {
        "values": {f"k{i}": text for i, text in enumerate(AWKWARD)},
        "keys": {text: i for i, text in enumerate(AWKWARD)},
        "items": list(AWKWARD),
        "numbers": [0, -3, 1.5, True, False, None],
        "nested": [{"a": [1, 2], "b": {"c": "d"}}, {}, []],
        "empty": {},
    }
    text = yamltext.dump(document, ["a comment"])
    assert parse_yaml(text) == document
    assert parse_yaml(text, (1, 1)) == document


def test_multiline_scripts_are_literal_blocks():
    """A shell script is written as a `|` block, as a person would write it."""
    text = yamltext.dump({"run": "echo a\necho b\n"})
    assert text == "run: |\n  echo a\n  echo b\n"


def test_text_that_cannot_be_written_is_refused():
    """Lone surrogates and non-finite numbers have no exact YAML form: an error, not a guess."""
    with pytest.raises(ValueError, match="not valid Unicode"):
        yamltext.dump({"a": "x\udcff"})
    with pytest.raises(ValueError, match="no YAML"):
        yamltext.dump({"a": float("nan")})
    with pytest.raises(ValueError, match="one line"):
        yamltext.dump({}, ["two\nlines"])


# --- what the files contain --------------------------------------------------------------


def test_github_matrix_from_the_flag_and_shards(tiny: Path):
    """--python and --shards become the matrix; the run step names the shard count and gets
    the matrix values as env vars; merge joins every shard artifact."""
    assert generate(tiny, "github", "--python", "3.12,3.13", "--shards", "3") == 0
    workflow = read(tiny, ".github/workflows/tests.yml")
    test = workflow["jobs"]["test"]
    assert test["strategy"] == {
        "fail-fast": False,
        "matrix": {"python": ["3.12", "3.13"], "shard": [1, 2, 3]},
    }
    run = next(step for step in test["steps"] if step.get("name") == "Run this shard")
    assert run["run"] == 'testfleet run --shard "$SHARD/3" --python "$PYTHON"\n'
    assert run["env"] == {"SHARD": "${{ matrix.shard }}", "PYTHON": "${{ matrix.python }}"}
    assert "services" not in test  # services run natively, started by testfleet
    upload = test["steps"][-1]
    assert upload["if"] == "${{ !cancelled() }}"
    assert upload["with"]["include-hidden-files"] is True
    assert upload["with"]["overwrite"] is True  # "Re-run failed jobs" replaces the artifact
    assert upload["with"]["path"] == ".testfleet/shards/"
    merge = workflow["jobs"]["merge"]
    assert merge["needs"] == ["prepare", "test"]
    assert merge["if"] == "${{ !cancelled() && needs.prepare.result == 'success' }}"
    download = next(s for s in merge["steps"] if s.get("name") == "Download every shard's results")
    assert download["with"] == {
        "pattern": "shard-*",
        "merge-multiple": True,
        "path": ".testfleet/shards",
    }
    assert {"name": "Merge the shards", "run": "testfleet merge\n"} in merge["steps"]


def test_python_from_the_environment_fills_the_matrix(tiny: Path, monkeypatch: pytest.MonkeyPatch):
    """TESTFLEET_PYTHON counts for `ci` as for every command: one shell, one configuration."""
    monkeypatch.setenv("TESTFLEET_PYTHON", "3.11,3.12")
    assert generate(tiny, "github") == 0
    workflow = read(tiny, ".github/workflows/tests.yml")
    assert workflow["jobs"]["test"]["strategy"]["matrix"]["python"] == ["3.11", "3.12"]


def test_pythons_come_from_config_else_the_running_interpreter(tiny: Path, tmp_path: Path):
    """Versions in [tool.testfleet] python fill the matrix; without them, the running X.Y; and
    the header says where they came from."""
    generate(tiny, "github")
    assert read(tiny, ".github/workflows/tests.yml")["jobs"]["test"]["strategy"]["matrix"][
        "python"
    ] == [RUNNING]
    assert (
        f"the Python running testfleet ({RUNNING})"
        in (tiny / ".github/workflows/tests.yml").read_text()
    )
    configured = write_pyproject(
        tmp_path / "c",
        TINY.replace("[tool.testfleet]", '[tool.testfleet]\npython = ["3.11", "3.13"]'),
    )
    generate(configured, "gitlab")
    matrix = read(configured, ".gitlab-ci.yml")["test"]["parallel"]["matrix"]
    assert matrix == [{"PYTHON": ["3.11", "3.13"], "SHARD": ["1", "2"]}]
    assert read(configured, ".gitlab-ci.yml")["merge"]["image"] == "python:3.13"
    generate(configured, "gitlab", "--python", "3.12")  # the flag wins, as everywhere
    assert read(configured, ".gitlab-ci.yml")["test"]["parallel"]["matrix"][0]["PYTHON"] == ["3.12"]


def test_run_options_reach_every_shard(tiny: Path):
    """--pytest-args and --test-timeout are passed on, quoted for the shell."""
    generate(tiny, "github", "--pytest-args=-x -k 'not slow'", "--test-timeout", "90")
    run = read(tiny, ".github/workflows/tests.yml")["jobs"]["test"]["steps"][-2]["run"]
    assert run.endswith("--pytest-args '-x -k '\"'\"'not slow'\"'\"'' --test-timeout 90\n")
    generate(tiny, "gitlab", "--test-timeout", "1.5")
    script = read(tiny, ".gitlab-ci.yml")["test"]["script"]
    assert script == ["testfleet run --shard ${SHARD}/2 --python ${PYTHON} --test-timeout 1.5"]


def test_shards_auto_from_measured_durations(tiny: Path):
    """1000 s measured in 20 modules, 300 s per shard at most: 4 shards, and the file says why."""
    measured = {f"tests/test_{i:02}.py::test_it": 50.0 for i in range(20)}
    store = tiny / ".testfleet" / "durations.json"
    store.parent.mkdir()
    store.write_text(json.dumps({"version": 1, "durations": measured}))
    generate(tiny, "github", "--shards", "auto", "--shard-target", "300")
    text = (tiny / ".github/workflows/tests.yml").read_text()
    assert parse_yaml(text)["jobs"]["test"]["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    assert "# --shards auto: 1000 s measured in 20 units; 4 shard(s)" in text
    assert "testfleet ci github --shards auto --shard-target 300" in text


def test_shards_auto_without_durations_is_one_shard_and_says_so(tiny: Path):
    generate(tiny, "gitlab", "--shards", "auto")
    text = (tiny / ".gitlab-ci.yml").read_text()
    assert read(tiny, ".gitlab-ci.yml")["test"]["parallel"]["matrix"][0]["SHARD"] == ["1"]
    assert "# --shards auto: no measured durations yet, so 1 shard" in text


def test_auto_shards_stops_where_more_shards_do_not_help():
    """A unit over the target alone cannot be split: the fewest shards reaching the best
    achievable time, and the note names the unit."""
    measured = {"tests/big.py::a": 400.0, "tests/s1.py::a": 100.0, "tests/s2.py::a": 100.0}
    count, note = model.auto_shards(measured, 300.0, "module")
    assert count == 2
    assert "tests/big.py, 400 s" in note
    assert model.auto_shards(measured, 300.0, "module") == (count, note)  # deterministic


def walk_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + "/" + key, key
            yield from walk_strings(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_strings(value, f"{path}/{i}")
    elif isinstance(node, str):
        yield path, node


def test_index_credentials_are_secret_references_only(tiny: Path):
    """With --index, uv's credential variables appear only as env names bound to
    `${{ secrets.NAME }}` (or declared secrets of the reusable workflow); never a value."""
    generate(tiny, "github", "--index", "corp.pypi", "--index", "mirror")
    generate(
        tiny,
        "github",
        "--reusable",
        "--index",
        "corp.pypi",
        "-o",
        ".github/workflows/r.yml",
        "--caller",
        ".github/workflows/c.yml",
    )
    names = {
        "UV_INDEX_CORP_PYPI_USERNAME",
        "UV_INDEX_CORP_PYPI_PASSWORD",
        "UV_INDEX_MIRROR_USERNAME",
        "UV_INDEX_MIRROR_PASSWORD",
    }
    plain = read(tiny, ".github/workflows/tests.yml")
    bound = set()
    for where, text in walk_strings(plain):
        if "UV_INDEX_" not in text:
            continue
        if where.endswith("/" + text):  # a key: the env var's name
            assert text in names, where
            bound.add(text)
        else:
            assert text == f"${{{{ secrets.{where.rsplit('/', 1)[1]} }}}}", (where, text)
    assert bound == names
    # Only the steps that run uv get them: not checkout, uploads, or the tests' other steps.
    steps = plain["jobs"]["test"]["steps"]
    with_credentials = [
        s.get("name") for s in steps if "UV_INDEX_MIRROR_USERNAME" in s.get("env", {})
    ]
    assert with_credentials == ["Install testfleet", "Run this shard"]
    reusable = read(tiny, ".github/workflows/r.yml")
    declared = reusable["on"]["workflow_call"]["secrets"]
    assert set(declared) == {"UV_INDEX_CORP_PYPI_USERNAME", "UV_INDEX_CORP_PYPI_PASSWORD"}
    assert all(spec["required"] is False for spec in declared.values())
    # The caller passes exactly the secrets declared, never every secret it has.
    assert read(tiny, ".github/workflows/c.yml")["jobs"]["tests"]["secrets"] == {
        name: f"${{{{ secrets.{name} }}}}" for name in declared
    }


def test_no_index_no_credentials(tiny: Path):
    """Without --index no file mentions uv's credential variables at all."""
    generate(tiny, "github")
    generate(tiny, "gitlab")
    for name in (".github/workflows/tests.yml", ".gitlab-ci.yml"):
        assert "UV_INDEX" not in (tiny / name).read_text()


def test_reusable_inputs_and_caller(tiny: Path):
    """--reusable: workflow_call inputs as documented, a matrix from them, toggles reach the
    run step as env vars; the caller uses it with every input spelled out."""
    assert generate(tiny, "github", "--reusable", "--python", "3.12,3.13", "--shards", "3") == 0
    reusable = read(tiny, ".github/workflows/testfleet.yml")
    inputs = reusable["on"]["workflow_call"]["inputs"]
    assert {name: spec["type"] for name, spec in inputs.items()} == {
        "python-versions": "string",
        "shards": "number",
        "runs-on": "string",
        "timeout-minutes": "number",
        "per-test-timeout-seconds": "number",
        "pytest-args": "string",
        "testfleet-spec": "string",
        "enable-postgresql": "boolean",
        "enable-mongodb": "boolean",
        "enable-valkey": "boolean",
        "enable-nats": "boolean",
        "enable-vault": "boolean",
    }
    assert json.loads(inputs["python-versions"]["default"]) == ["3.12", "3.13"]
    assert inputs["shards"]["default"] == 3
    assert inputs["timeout-minutes"]["default"] == 30
    assert inputs["runs-on"]["default"] == "ubuntu-latest"
    assert inputs["enable-valkey"]["default"] is True  # the tiny project has valkey
    assert inputs["enable-postgresql"]["default"] is False
    # A caller may turn on any toggle: the pinned install brings every toggle's driver.
    assert (
        inputs["testfleet-spec"]["default"]
        == "testfleet[mongodb,nats,postgres,valkey,vault]==1.2.3"
    )
    test = reusable["jobs"]["test"]
    assert test["strategy"]["matrix"] == {
        "python": "${{ fromJSON(inputs.python-versions) }}",
        "shard": "${{ fromJSON(needs.prepare.outputs.shards) }}",
    }
    assert test["timeout-minutes"] == "${{ inputs.timeout-minutes }}"
    run = next(step for step in test["steps"] if step.get("name") == "Run this shard")
    assert run["env"]["PER_TEST_TIMEOUT"] == "${{ inputs.per-test-timeout-seconds }}"
    caller = read(tiny, ".github/workflows/tests.yml")
    job = caller["jobs"]["tests"]
    assert job["uses"] == "./.github/workflows/testfleet.yml"
    assert job["with"]["python-versions"] == '["3.12", "3.13"]'
    assert job["with"]["shards"] == 3
    assert "secrets" not in job  # no index: nothing to pass
    assert "concurrency" in caller
    assert "concurrency" not in reusable


def run_step_script(tmp_path: Path, script: str, env: dict[str, str]) -> list[str]:
    """A run step's script with a `testfleet` that records its arguments; those arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv"
    fake = bin_dir / "testfleet"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {record}\n')
    fake.chmod(0o755)
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
        check=True,
    )
    return record.read_text().splitlines()


def test_reusable_toggles_start_services_through_with(tiny: Path, tmp_path: Path):
    """enable-* inputs become TESTFLEET_WITH of the test and merge jobs (`testfleet run
    --with`); the per-test timeout and pytest arguments arrive as single words."""
    generate(tiny, "github", "--reusable")
    workflow = read(tiny, ".github/workflows/testfleet.yml")
    prepare = workflow["jobs"]["prepare"]
    choose = next(s for s in prepare["steps"] if s.get("id") == "services")
    assert prepare["outputs"]["with"] == "${{ steps.services.outputs.with }}"
    output = tmp_path / "output"

    def chosen(enabled: set[str]) -> str:
        env = {
            f"ENABLE_{t.upper()}": "true" if t in enabled else "false"
            for t in model.SERVICE_TOGGLES
        }
        subprocess.run(
            ["bash", "-eo", "pipefail", "-c", choose["run"]],
            env={"PATH": "/usr/bin:/bin", "GITHUB_OUTPUT": str(output), **env},
            check=True,
        )
        return output.read_text().splitlines()[-1]

    assert chosen(set()) == "with="
    assert chosen({"postgresql", "nats"}) == "with=postgres,nats"
    for name in ("test", "merge"):
        env = workflow["jobs"][name]["env"]
        assert env == {"TESTFLEET_WITH": "${{ needs.prepare.outputs.with }}"}
    run = next(s for s in workflow["jobs"]["test"]["steps"] if s.get("name") == "Run this shard")
    base = {
        "SHARD": "2",
        "SHARDS": "3",
        "PYTHON": "3.12",
        "PYTEST_ARGS": "-k 'a b'",
        "PER_TEST_TIMEOUT": "0",
    }
    assert run_step_script(tmp_path, run["run"], base) == [
        "run",
        "--shard",
        "2/3",
        "--python",
        "3.12",
        "--pytest-args",
        "-k 'a b'",
    ]
    timed = run_step_script(tmp_path, run["run"], {**base, "PER_TEST_TIMEOUT": "45"})
    assert timed[-2:] == ["--test-timeout", "45"]


@pytest.mark.parametrize("shards", ["1", "3", "12"])
def test_reusable_shard_list_script(tmp_path: Path, tiny: Path, shards: str):
    """The setup job's script turns the `shards` input into the matrix's JSON list."""
    generate(tiny, "github", "--reusable")
    step = read(tiny, ".github/workflows/testfleet.yml")["jobs"]["prepare"]["steps"][0]
    output = tmp_path / "out"
    subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step["run"]],
        env={**os.environ, "SHARDS": shards, "GITHUB_OUTPUT": str(output)},
        check=True,
    )
    key, _, value = output.read_text().strip().partition("=")
    assert key == "list"
    assert json.loads(value) == list(range(1, int(shards) + 1))
    bad = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step["run"]],
        env={**os.environ, "SHARDS": "0", "GITHUB_OUTPUT": str(output)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "::error::the shards input must be a whole number" in bad.stdout


def test_lint_and_typecheck_jobs_only_when_configured(tiny: Path, tmp_path: Path):
    """ruff and mypy jobs appear when the project configures them, in the project's own
    versions; a project without them gets none."""
    generate(tiny, "github")
    assert set(read(tiny, ".github/workflows/tests.yml")["jobs"]) == {"prepare", "test", "merge"}
    tools = write_pyproject(
        tmp_path / "tools",
        TINY.replace("[tool.testfleet]", '[tool.testfleet]\nextras = ["dev"]')
        + '\n[tool.ruff]\nline-length = 100\n\n[tool.mypy]\nfiles = ["src"]\n',
    )
    pyproject = tools / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'version = "0"\n',
            'version = "0"\n[project.optional-dependencies]\ndev = ["ruff==0.6.9", "mypy>=1.10"]\n',
        )
    )
    generate(tools, "github")
    jobs = read(tools, ".github/workflows/tests.yml")["jobs"]
    assert jobs["lint"]["steps"][-1]["run"] == "uvx --from ruff==0.6.9 ruff check ."
    assert jobs["typecheck"]["steps"][-1]["run"] == "uv run --extra dev --with 'mypy>=1.10' mypy"
    generate(tools, "gitlab")
    pipeline = read(tools, ".gitlab-ci.yml")
    assert pipeline["lint"]["script"] == ["uvx --from ruff==0.6.9 ruff check ."]
    assert pipeline["typecheck"]["stage"] == "test"


def test_gitlab_reports(tiny: Path):
    """GitLab gets the JUnit and Cobertura reports, a coverage regex, and merge runs always."""
    generate(tiny, "gitlab")
    pipeline = read(tiny, ".gitlab-ci.yml")
    assert pipeline["stages"] == ["test", "merge"]
    assert pipeline["test"]["image"] == "python:${PYTHON}"
    assert pipeline["test"]["artifacts"] == {
        "when": "always",
        "paths": [".testfleet/shards/"],
        "expire_in": "1 week",
    }
    merge = pipeline["merge"]
    assert (merge["stage"], merge["when"], merge["script"]) == (
        "merge",
        "always",
        ["testfleet merge"],
    )
    assert merge["artifacts"]["reports"] == {
        "junit": ".testfleet/junit.xml",
        "coverage_report": {"coverage_format": "cobertura", "path": ".testfleet/coverage.xml"},
    }
    pattern = re.compile(merge["coverage"].strip("/"))
    match = pattern.search("TOTAL                     120     12  90.0%")
    assert match is not None
    assert match.group(1) == "90.0"


# --- headers, regeneration and overwriting -----------------------------------------------


def test_header_names_the_command_that_regenerates_the_same_file(tiny: Path):
    """The file's header holds a command line; running it writes the same file again."""
    generate(tiny, "github", "--python", "3.12", "--pytest-args=-q -x", "--index", "corp")
    path = tiny / ".github/workflows/tests.yml"
    first = path.read_text()
    lines = first.splitlines()
    assert lines[0].startswith("# Generated by `testfleet ci github`")
    command = lines[2].removeprefix("#").strip()
    argv = shlex.split(command)
    assert argv[:3] == ["testfleet", "ci", "github"]
    path.unlink()
    generate(tiny, *argv[2:])
    assert path.read_text() == first


def test_a_foreign_file_is_not_overwritten_without_force(tiny: Path):
    """A workflow someone wrote by hand stays, with a one-line error naming it and the fix."""
    path = tiny / ".github/workflows/tests.yml"
    path.parent.mkdir(parents=True)
    path.write_text("name: mine\n")
    with pytest.raises(
        ConfigError, match=r"tests\.yml exists and was not written by `testfleet ci`.*--force"
    ):
        generate(tiny, "github")
    assert path.read_text() == "name: mine\n"
    generate(tiny, "github", "--force")
    assert path.read_text().startswith("# Generated by `testfleet ci github`")
    generate(tiny, "github", "--shards", "5")  # ours: replaced without --force
    assert "shard: [1, 2, 3, 4, 5]" in path.read_text()
    assert sorted(p.name for p in path.parent.iterdir()) == ["tests.yml"]  # no temp files


def test_reusable_checks_both_files_before_writing_either(tiny: Path):
    """A foreign caller file stops --reusable before the reusable workflow is written."""
    caller = tiny / ".github/workflows/tests.yml"
    caller.parent.mkdir(parents=True)
    caller.write_text("name: mine\n")
    with pytest.raises(ConfigError, match=r"tests\.yml exists"):
        generate(tiny, "github", "--reusable")
    assert not (tiny / ".github/workflows/testfleet.yml").exists()


def test_stdout_writes_no_file(tiny: Path, capsys: pytest.CaptureFixture[str]):
    """--stdout prints the files as one YAML stream and writes nothing."""
    generate(tiny, "github", "--reusable", "--stdout")
    documents = list(YAML(typ="safe", pure=True).load_all(capsys.readouterr().out))
    assert [d["name"] for d in documents] == ["testfleet", "tests"]
    assert not (tiny / ".github").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["github", "--shard-target", "60"], "--shard-target applies to --shards auto"),
        (["github", "--python", "3.12,/usr/bin/python3"], "CI installs Python by version"),
        (["github", "--python", "3.12,3.12"], "each once"),
        (["github", "--shards", "0"], "whole number of shards from 1"),
        (["gitlab", "--index", "https://x/simple"], "pass the name, not its URL"),
        (["github", "--caller", "x.yml"], "add --reusable"),
        (["github", "--reusable", "-o", "ci/reusable.yml"], "only from .github/workflows/"),
        (["github", "--pytest-args=-k ${{ secrets.X }}"], "GitHub would evaluate"),
        (["github", "--pytest-args=-k 'x"], "shell-quoted"),
        (["github", "--test-timeout", "0"], "positive number of seconds"),
        (["azure"], "invalid choice"),
    ],
)
def test_user_errors_are_one_line_config_errors(tiny: Path, argv: list[str], message: str):
    """Each mistake is one ConfigError line that says what to change."""
    with pytest.raises(ConfigError, match=message) as caught:
        generate(tiny, *argv)
    assert "\n" not in caught.value.message


# --- the validators ----------------------------------------------------------------------


def all_files(root: Path) -> dict[str, list[str]]:
    generate(
        root, "github", "--python", "3.11,3.12,3.13", "--index", "corp", "--test-timeout", "60"
    )
    plain = (root / ".github/workflows/tests.yml").read_text()
    (root / ".github/workflows/tests.yml").unlink()
    (root / "plain.yml").write_text(plain)
    generate(root, "github", "--reusable", "--index", "corp", "--pytest-args=-q")
    generate(root, "gitlab", "--python", "3.11,3.12", "--index", "corp")
    return {
        "github": ["plain.yml", ".github/workflows/testfleet.yml", ".github/workflows/tests.yml"],
        "gitlab": [".gitlab-ci.yml"],
    }


@pytest.mark.parametrize("which", ["tiny", "example"])
def test_generated_files_pass_actionlint_and_the_schemas(
    which: str, request: pytest.FixtureRequest
):
    """github, github --reusable (both files) and gitlab pass actionlint and check-jsonschema's
    bundled GitHub workflow and GitLab CI schemas (no network needed)."""
    root: Path = request.getfixturevalue(which)
    files = all_files(root)
    # actionlint finds the workflows of a git repository, and only there does it resolve the
    # caller's local `uses:` (checking its inputs against the reusable workflow's).
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copy(root / "plain.yml", root / ".github/workflows/plain.yml")
    lint = subprocess.run(
        [tool("actionlint"), "-no-color"], cwd=root, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for name in files["github"]:
        schema = subprocess.run(
            [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", name],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert schema.returncode == 0, schema.stdout + schema.stderr
    gitlab = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", ".gitlab-ci.yml"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert gitlab.returncode == 0, gitlab.stdout + gitlab.stderr


def test_actionlint_catches_a_broken_workflow(tiny: Path):
    """The validator test would notice: a workflow with a wrong key fails actionlint."""
    generate(tiny, "github")
    subprocess.run(["git", "init", "-q", str(tiny)], check=True)
    path = tiny / ".github/workflows/tests.yml"
    path.write_text(path.read_text().replace("runs-on:", "run-on:", 1))
    lint = subprocess.run(
        [tool("actionlint"), "-no-color"], cwd=tiny, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 1
    assert "run-on" in lint.stdout


def test_actionlint_checks_the_caller_against_the_reusable_workflow(tiny: Path):
    """In a git repository actionlint reads the called workflow: a caller passing an input
    the reusable workflow does not declare fails, so the validator test covers the pair."""
    generate(tiny, "github", "--reusable")
    subprocess.run(["git", "init", "-q", str(tiny)], check=True)
    caller = tiny / ".github/workflows/tests.yml"
    caller.write_text(caller.read_text().replace("shards: 2", "shard-count: 2"))
    lint = subprocess.run(
        [tool("actionlint"), "-no-color"], cwd=tiny, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 1
    assert "shard-count" in lint.stdout


def test_every_ci_flag_is_documented():
    """docs/ci.md's option table cannot fall behind the flags `testfleet ci` accepts."""
    parser = build_parser("ci")
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    (systems,) = (
        action
        for action in commands.choices["ci"]._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    flags = {
        option
        for system in systems.choices.values()
        for action in system._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert "--reusable" in flags
    reference = (REPO / "docs" / "ci.md").read_text()
    missing = sorted(flag for flag in flags if f"`{flag}" not in reference)
    assert not missing, f"not in docs/ci.md: {missing}"


def test_an_expression_in_a_pyproject_requirement_is_refused(tiny: Path):
    """The lint job's `run:` carries the project's own ruff requirement; GitHub would evaluate
    `${{ }}` in it (reading secrets into a command line), so it never reaches a file."""
    pyproject = tiny / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'version = "0"\n',
            'version = "0"\n[project.optional-dependencies]\n'
            'dev = ["ruff==${{ secrets.TOKEN }}"]\n',
        )
        + "\n[tool.ruff]\nline-length = 100\n"
    )
    with pytest.raises(ConfigError, match=r"requirement .*GitHub would evaluate") as caught:
        generate(tiny, "github")
    assert "\n" not in caught.value.message
    assert not (tiny / ".github").exists()
    assert generate(tiny, "gitlab") == 0  # GitLab does not evaluate it; the shell gets it quoted
