"""The generated GitHub workflow, run end to end without GitHub.

A small project (two test modules on one Valkey service: passing, failing and skipped tests)
gets `testfleet ci github --shards 2` for the running Python. The test reads the generated
file, expands its matrix and runs every job the way a runner would: each job in its own fresh
`git clone` of the project (what `actions/checkout` gives), every `run:` step with bash
(`defaults.run.shell`), its `${{ }}` expressions substituted, with `GITHUB_WORKSPACE`,
`GITHUB_OUTPUT`, `GITHUB_ENV`, `GITHUB_PATH` and `GITHUB_STEP_SUMMARY` set, and step `if:`
conditions honoured (a failed step skips the rest unless `always()`). `uses:` steps are
emulated by a small table: checkout is the clone; setup-python puts this interpreter's
installation first on PATH; setup-uv puts uv and uv's tool bin directory on PATH and sets
UV_CACHE_DIR as its inputs ask; the cache and JUnit report actions do nothing; upload-artifact
copies the paths into a local artifact store (leaving out dot-files unless
`include-hidden-files`, as the real action does); download-artifact copies the matching
artifacts back, merged.

The install step really runs `uv tool install` of this checkout (generated with
`--testfleet-spec`), with UV_TOOL_DIR and UV_TOOL_BIN_DIR pointed at the job's own temp
directories so nothing lands in the user's ~/.local. It installs from a copy of the source,
because uv reuses a wheel it built from a local directory until its pyproject.toml changes.

The merged `.testfleet/junit.xml` must list exactly the tests, with the same outcomes, that a
one-machine `testfleet run` of the same project lists.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from testfleet.cli import build_parser
from testfleet.commands import Call
from testfleet.commands import ci as ci_command
from tests.helpers import REPO

pytestmark = pytest.mark.e2e

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
STEP_TIMEOUT = 600

CONFTEST = '''\
"""A minimal Valkey client over RESP: the project needs nothing but pytest."""

import os
import socket
import urllib.parse

import pytest


class Valkey:
    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self.reader = self.sock.makefile("rb")
        if parts.password:
            self.call("AUTH", parts.password)
        self.call("SELECT", (parts.path or "/0").lstrip("/") or "0")

    def call(self, *args):
        words = [str(arg).encode() for arg in args]
        self.sock.sendall(
            b"*%d\\r\\n" % len(words) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(w), w) for w in words)
        )
        return self._reply()

    def _reply(self):
        line = self.reader.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.reader.read(size + 2)[:-2].decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def close(self):
        self.reader.close()
        self.sock.close()


@pytest.fixture
def valkey():
    client = Valkey(os.environ["VALKEY_URL"])
    yield client
    client.close()
'''

PROJECT = {
    "pyproject.toml": (
        '[project]\nname = "tinyshop"\nversion = "0"\nrequires-python = ">=3.10"\n'
        'dependencies = ["pytest>=8"]\n\n'
        '[tool.testfleet]\npytest-args = ["-q"]\n\n'
        "[tool.testfleet.services.valkey]\n"
    ),
    ".gitignore": ".testfleet/\n__pycache__/\n",
    "tests/conftest.py": CONFTEST,
    "tests/test_cache.py": (
        "import pytest\n\n\n"
        "def test_ping(valkey):\n"
        '    assert valkey.call("PING") == "PONG"\n\n\n'
        "def test_set_then_get(valkey):\n"
        '    valkey.call("SET", "greeting", "hello")\n'
        '    assert valkey.call("GET", "greeting") == "hello"\n\n\n'
        "def test_flushed_database_is_empty(valkey):\n"
        '    valkey.call("FLUSHDB")\n'
        '    assert valkey.call("DBSIZE") == 0\n\n\n'
        '@pytest.mark.skip(reason="a skipped outcome for the merged report")\n'
        "def test_skipped(valkey):\n"
        '    raise AssertionError("never runs")\n'
    ),
    "tests/test_queue.py": (
        "import pytest\n\n\n"
        '@pytest.mark.parametrize("items", [["a"], ["a", "b", "c"]])\n'
        "def test_push_then_pop_in_order(valkey, items):\n"
        '    valkey.call("DEL", "queue")\n'
        "    for item in items:\n"
        '        valkey.call("RPUSH", "queue", item)\n'
        '    assert [valkey.call("LPOP", "queue") for _ in items] == items\n\n\n'
        "def test_counter(valkey):\n"
        '    valkey.call("SET", "n", 41)\n'
        '    assert valkey.call("INCR", "n") == 42\n\n\n'
        "def test_fails_on_purpose(valkey):\n"
        '    assert valkey.call("GET", "missing") == "present", "kept in the merged report"\n'
    ),
}

EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def generate(root: Path, *argv: str) -> None:
    args = build_parser("ci").parse_args(["-C", str(root), "ci", *argv])
    assert ci_command.main(Call(args)) == 0


def copy_of_testfleet(into: Path) -> Path:
    """A copy of what builds testfleet's wheel, new to uv's cache (see the module docstring)."""
    into.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, into / name)
    shutil.copytree(REPO / "src", into / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return into


# What this test process carries that a CI machine would not: its own run's context, the venv
# it runs in, and an outer CI's variables.
FOREIGN_PREFIXES = ("TESTFLEET_", "PYTEST_", "GITHUB_", "RUNNER_", "UV_TOOL_", "COV_CORE_")
FOREIGN_NAMES = ("PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")


def machine_environ() -> dict[str, str]:
    """The machine's environment (its proxy and CA settings, HOME, locale) for the jobs."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in FOREIGN_NAMES and not name.startswith(FOREIGN_PREFIXES)
    }


@dataclass
class StepRecord:
    name: str
    ran: bool
    code: int = 0
    output: str = ""


@dataclass
class Job:
    """One job of the workflow on its own "machine": a clone, temp dirs, env and PATH."""

    name: str
    matrix: dict[str, Any]
    home: Path
    shell: str
    store: Path
    workspace: Path = field(init=False)
    temp: Path = field(init=False)
    env: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    failed: bool = False
    steps: list[StepRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workspace = self.home / "workspace"
        self.temp = self.home / "runner-temp"
        self.temp.mkdir(parents=True)
        for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY"):
            (self.temp / name).touch()
        self.env = {
            **machine_environ(),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "RUNNER_OS": "Linux",
            "RUNNER_TEMP": str(self.temp),
            "GITHUB_WORKSPACE": str(self.workspace),
            **{name: str(self.temp / name) for name in ("GITHUB_OUTPUT", "GITHUB_ENV")},
            **{name: str(self.temp / name) for name in ("GITHUB_PATH", "GITHUB_STEP_SUMMARY")},
            # Where `uv tool install` puts testfleet: this job's own, never the user's ~/.local.
            "UV_TOOL_DIR": str(self.home / "uv-tools"),
            "UV_TOOL_BIN_DIR": str(self.home / "uv-tools-bin"),
            # Interpreters come from this machine; uv's own downloads fail here.
            "UV_PYTHON_DOWNLOADS": "never",
        }

    # -- expressions -----------------------------------------------------------------------

    def evaluate(self, expression: str) -> Any:
        """The expressions the generator writes; anything else fails the test, so a new one
        is taught to this emulator rather than passed through untested."""
        if expression == "always()":
            return True
        if expression == "success()":
            return not self.failed
        if expression == "failure()":
            return self.failed
        if expression == "runner.os":
            return "Linux"
        matrix = re.fullmatch(r"matrix\.([A-Za-z0-9_-]+)", expression)
        if matrix:
            return self.matrix[matrix.group(1)]
        if re.fullmatch(r"hashFiles\(('[^']*'(, )?)+\)", expression):
            return "0" * 64
        raise AssertionError(f"the emulator does not know the expression {expression!r}")

    def substitute(self, value: Any) -> Any:
        if isinstance(value, str):
            return EXPRESSION.sub(lambda m: str(self.evaluate(m.group(1))), value)
        if isinstance(value, dict):
            return {key: self.substitute(item) for key, item in value.items()}
        return value

    def condition(self, text: str | None) -> bool:
        if text is None:
            return not self.failed
        match = EXPRESSION.fullmatch(text.strip())
        return bool(self.evaluate(match.group(1) if match else text.strip()))

    # -- steps -----------------------------------------------------------------------------

    def environ(self, extra: dict[str, str]) -> dict[str, str]:
        path = [*self.path, "/usr/local/bin", "/usr/bin", "/bin"]
        return {**self.env, **extra, "PATH": os.pathsep.join(path)}

    def run_script(self, script: str, env: dict[str, str]) -> tuple[int, str]:
        index = len(self.steps)
        script_file = self.temp / f"step-{index}.sh"
        script_file.write_text(script)
        # GitHub's `shell: bash`.
        assert self.shell == "bash"
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)],
            cwd=self.workspace,
            env=self.environ(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        self._apply_runner_files()
        return done.returncode, done.stdout + done.stderr

    def _apply_runner_files(self) -> None:
        """What a step wrote to GITHUB_ENV and GITHUB_PATH holds for the steps after it."""
        env_file, path_file = self.temp / "GITHUB_ENV", self.temp / "GITHUB_PATH"
        for line in env_file.read_text().splitlines():
            assert "<<" not in line, "multi-line GITHUB_ENV values are not emulated"
            name, _, value = line.partition("=")
            self.env[name] = value
        for line in reversed(path_file.read_text().splitlines()):
            self.path.insert(0, line)
        env_file.write_text("")
        path_file.write_text("")

    def run_step(self, step: dict[str, Any]) -> None:
        name = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
        if not self.condition(step.get("if")):
            self.steps.append(StepRecord(name, ran=False))
            return
        env = {key: str(value) for key, value in self.substitute(step.get("env", {})).items()}
        if "run" in step:
            code, output = self.run_script(self.substitute(step["run"]), env)
        else:
            code, output = self.use(step["uses"], self.substitute(step.get("with", {})))
        self.steps.append(StepRecord(name, ran=True, code=code, output=output))
        if code != 0:
            self.failed = True

    # -- the actions, emulated -------------------------------------------------------------

    def use(self, uses: str, given: dict[str, Any]) -> tuple[int, str]:
        action = uses.split("@", 1)[0]
        if action == "actions/checkout":
            return 0, "the job's workspace is already a fresh clone"
        if action == "actions/setup-python":
            assert given["python-version"] == RUNNING, given
            self.path.insert(0, str(Path(sys.base_prefix) / "bin"))
            return 0, f"python {RUNNING} from {sys.base_prefix}"
        if action == "astral-sh/setup-uv":
            uv_bin = self.home / "uv-bin"
            uv_bin.mkdir(exist_ok=True)
            search = [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
            uv = shutil.which("uv", path=os.pathsep.join(search))
            assert uv, "uv is missing: install testfleet's dev extra"
            (uv_bin / "uv").symlink_to(uv)
            self.path[:0] = [self.env["UV_TOOL_BIN_DIR"], str(uv_bin)]
            if given.get("cache-local-path"):
                self.env["UV_CACHE_DIR"] = os.path.expanduser(given["cache-local-path"])
            return 0, "uv on PATH"
        if action in ("actions/cache", "mikepenz/action-junit-report"):
            for report in str(given.get("report_paths", "")).split():
                assert (self.workspace / report).is_file(), f"no JUnit report at {report}"
            return 0, "nothing to do here"
        if action == "actions/upload-artifact":
            return self.upload(given)
        if action == "actions/download-artifact":
            return self.download(given)
        raise AssertionError(f"the emulator does not know the action {uses}")

    def upload(self, given: dict[str, Any]) -> tuple[int, str]:
        paths = [self.workspace / p.strip() for p in given["path"].splitlines() if p.strip()]
        hidden = given.get("include-hidden-files") is True
        files = []
        for path in paths:
            found = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            files += [p for p in found if p.is_file()]
        if not hidden:  # upload-artifact leaves out every path with a part starting with "."
            files = [
                f
                for f in files
                if not any(part.startswith(".") for part in f.relative_to(self.workspace).parts)
            ]
        if not files:
            code = 1 if given.get("if-no-files-found") == "error" else 0
            return code, "no files found"
        root = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in paths]))
        target = self.store / given["name"]
        assert not target.exists(), f"artifact {given['name']} uploaded twice"
        for file in files:
            destination = target / file.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, destination)
        return 0, f"uploaded {len(files)} file(s) as {given['name']}"

    def download(self, given: dict[str, Any]) -> tuple[int, str]:
        into = self.workspace / given.get("path", ".")
        names = sorted(p.name for p in self.store.iterdir())
        chosen = [n for n in names if fnmatch.fnmatchcase(n, given.get("pattern", "*"))]
        owner: dict[Path, str] = {}
        for name in chosen:
            source = self.store / name
            base = into if given.get("merge-multiple") else into / name
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                relative = file.relative_to(source)
                # Merged artifacts that share a path would silently keep only one of them.
                assert relative not in owner, f"{relative} is in {owner.get(relative)} and {name}"
                owner[relative] = name
                destination = base / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, destination)
        return 0, f"downloaded {', '.join(chosen)}"


def run_job(
    name: str,
    spec: dict[str, Any],
    matrix: dict[str, Any],
    home: Path,
    *,
    origin: Path,
    store: Path,
    needs_failed: bool = False,
) -> Job:
    """The job on a fresh "machine", when its `if:` holds (evaluated with the jobs it needs
    as its past: a failure there is what `always()` runs despite)."""
    job = Job(name, matrix, home, shell="bash", store=store)
    job.failed = needs_failed
    assert job.condition(spec.get("if")), f"job {name} would not run"
    job.failed = False
    git("clone", "-q", str(origin), str(job.workspace), cwd=home)
    for step in spec["steps"]:
        job.run_step(step)
    return job


def outcomes(junit: Path) -> dict[tuple[str, str], str]:
    """(classname, name) -> passed / failed / error / skipped, each test exactly once."""
    found: dict[tuple[str, str], str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        assert key not in found, f"{key} is in {junit} twice"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        found[key] = kinds[0] if kinds else "passed"
    return found


def describe(job: Job) -> str:
    lines = [f"job {job.name} {job.matrix}:"]
    for step in job.steps:
        status = f"exit {step.code}" if step.ran else "skipped"
        lines.append(f"  - {step.name}: {status}")
        if step.ran and step.code:
            lines += [f"      {line}" for line in step.output.splitlines()[-30:]]
        if step.ran and not step.code:
            lines += [f"      {line}" for line in step.output.splitlines()[-6:]]
    return "\n".join(lines)


def make_origin(tmp_path: Path) -> Path:
    """The project's repository, its generated workflow committed with it."""
    origin = tmp_path / "origin"
    for relative, text in PROJECT.items():
        (origin / relative).parent.mkdir(parents=True, exist_ok=True)
        (origin / relative).write_text(text)
    spec = f"testfleet[valkey] @ {copy_of_testfleet(tmp_path / 'testfleet-src').as_uri()}"
    generate(origin, "github", "--python", RUNNING, "--shards", "2", "--testfleet-spec", spec)
    git("init", "-q", cwd=origin)
    git("add", ".", cwd=origin)
    git("commit", "-q", "-m", "project with its generated workflow", cwd=origin)
    return origin


def one_machine(origin: Path, clone: Path) -> dict[tuple[str, str], str]:
    """The outcomes of the same project run on one machine, with the command a developer
    runs."""
    git("clone", "-q", str(origin), str(clone), cwd=origin.parent)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TESTFLEET_")}
    single = subprocess.run(
        [sys.executable, "-m", "testfleet", "run", "--python", RUNNING],
        cwd=clone,
        env={**environ, "UV_PYTHON_DOWNLOADS": "never"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert single.returncode == 1, single.stderr  # the suite has a failing test
    expected = outcomes(clone / ".testfleet" / "junit.xml")
    assert len(expected) == 8
    assert sorted(set(expected.values())) == ["failure", "passed", "skipped"]
    return expected


def test_generated_workflow_runs_end_to_end(tmp_path: Path):
    """Two shard jobs and the merge job of the generated workflow, each on its own clone,
    give the JUnit report a one-machine run gives: every test once, same outcomes."""
    origin = make_origin(tmp_path)

    yaml = YAML(typ="safe", pure=True)
    workflow = yaml.load((origin / ".github/workflows/tests.yml").read_text())
    assert set(workflow["jobs"]) == {"test", "merge"}  # no ruff or mypy configured
    assert workflow["defaults"]["run"]["shell"] == "bash"
    test = workflow["jobs"]["test"]
    axes = test["strategy"]["matrix"]
    assert axes == {"python": [RUNNING], "shard": [1, 2]}
    store = tmp_path / "artifacts"
    store.mkdir()

    jobs = []
    for number, values in enumerate(itertools.product(*axes.values())):
        matrix = dict(zip(axes, values, strict=True))
        jobs.append(
            run_job("test", test, matrix, tmp_path / f"test-{number}", origin=origin, store=store)
        )
    report = "\n".join(describe(job) for job in jobs)
    for job in jobs:
        ran = {step.name: step for step in job.steps}
        assert ran["Install testfleet"].code == 0, report
        # A shard with a failing test fails its job (exit 1) and still uploads its results.
        assert ran["Run this shard"].code in (0, 1), report
        assert ran["Upload the shard's results"].ran, report
        assert ran["Upload the shard's results"].code == 0, report
    assert sorted(p.name for p in store.iterdir()) == [
        f"shard-py{RUNNING}-1",
        f"shard-py{RUNNING}-2",
    ]

    merge_spec = workflow["jobs"]["merge"]
    assert merge_spec["needs"] == "test"
    failed = any(job.failed for job in jobs)
    assert failed  # a shard has the failing test; the merge job must run all the same
    merge = run_job(
        "merge", merge_spec, {}, tmp_path / "merge", origin=origin, store=store, needs_failed=failed
    )
    report += "\n" + describe(merge)
    ran = {step.name: step for step in merge.steps}
    # The suite has a failing test: merge says so with its exit code, and the steps marked
    # always() still publish the reports.
    assert ran["Merge the shards"].code == 1, report
    assert ran["Upload the merged reports"].ran, report
    assert ran["Show the tests in GitHub's checks"].ran, report
    assert (merge.temp / "GITHUB_STEP_SUMMARY").read_text().strip(), "no step summary written"
    merged = outcomes(merge.workspace / ".testfleet" / "junit.xml")
    published = store / "testfleet-report"
    assert outcomes(published / "junit.xml") == merged

    expected = one_machine(origin, tmp_path / "one-machine")
    assert merged == expected, report
