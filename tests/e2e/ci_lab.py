"""The project, release and runner machine the tests of the generated CI files share
(test_generated_workflow.py for GitHub, test_generated_pipeline.py for GitLab, and the
CI-runner container in tests/docker/)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from testfleet.venvs import installed_pythons
from tests.e2e.github_runner import Run, Stores, Workflow

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

QUEUE = '''\
"""A queue on Valkey: what the tests measure coverage of."""


def push_all(client, key, items):
    client.call("DEL", key)
    for item in items:
        client.call("RPUSH", key, item)
    return len(items)


def pop_all(client, key, count):
    return [client.call("LPOP", key) for _ in range(count)]


def never_called():
    return "uncovered"
'''


def slow_module(seconds: list[float]) -> str:
    """Tests that each take a while (their work is the waiting), so shards can be unbalanced."""
    lines = ["import time\n\n"]
    for number, wait in enumerate(seconds):
        lines.append(f"\ndef test_work_{number}():\n    time.sleep({wait})\n\n")
    return "".join(lines)


PYPROJECT = """\
[project]
name = "tinyshop"
version = "0"
requires-python = ">=3.10"
dependencies = ["pytest>=8"]

[tool.pytest.ini_options]
pythonpath = ["."]

[tool.testfleet]
pytest-args = ["-q"]
coverage = true
coverage-fail-under = 50

[tool.testfleet.services.valkey]
"""

FILES = {
    ".gitignore": ".testfleet/\n__pycache__/\n",
    "tinyshop/__init__.py": "",
    "tinyshop/queue.py": QUEUE,
    "tests/conftest.py": CONFTEST,
    "tests/test_cache.py": (
        "import pytest\n\n\n"
        "def test_ping(valkey):\n"
        '    assert valkey.call("PING") == "PONG"\n\n\n'
        "def test_set_then_get(valkey):\n"
        '    valkey.call("SET", "greeting", "hello")\n'
        '    assert valkey.call("GET", "greeting") == "hello"\n\n\n'
        '@pytest.mark.skip(reason="a skipped outcome for the merged report")\n'
        "def test_skipped(valkey):\n"
        '    raise AssertionError("never runs")\n'
    ),
    "tests/test_queue.py": (
        "import pytest\n\nfrom tinyshop.queue import pop_all, push_all\n\n\n"
        '@pytest.mark.parametrize("items", [["a"], ["a", "b", "c"]])\n'
        "def test_push_then_pop_in_order(valkey, items):\n"
        '    push_all(valkey, "queue", items)\n'
        '    assert pop_all(valkey, "queue", len(items)) == items\n\n\n'
        "def test_fails_on_purpose(valkey):\n"
        '    assert valkey.call("GET", "missing") == "present", "kept in the merged report"\n'
    ),
    "tests/test_slow_a.py": slow_module([0.6, 0.6]),
    "tests/test_slow_b.py": slow_module([0.3, 0.3]),
    "tests/test_slow_c.py": slow_module([0.4]),
}
FAILING_LINE = 13  # of tests/test_queue.py: the failing assert
TESTS = 11  # collected per Python version


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def two_versions() -> list[str]:
    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split("."))

    found = {".".join(v.split(".")[:2]) for v in installed_pythons()}
    others = sorted((v for v in found if key(v) >= (3, 10) and v != RUNNING), key=key)
    if not others:
        pytest.skip("needs a second Python version >= 3.10")
    return sorted([RUNNING, others[-1]], key=key)


def python_bins(versions: list[str]) -> dict[str, str]:
    """What setup-python would put first on PATH for each version: its installation's bin
    directory (the newest patch release found; the running one for its own version)."""
    found = {RUNNING: str(Path(sys.base_prefix) / "bin")}
    for full, path in installed_pythons().items():
        version = ".".join(full.split(".")[:2])
        if version != RUNNING:
            found[version] = str(path.parent)
    return {version: found[version] for version in versions}


# What this test process carries that a CI machine would not: its own run's context, the venv
# it runs in, and an outer CI's variables.
FOREIGN_PREFIXES = ("TESTFLEET_", "PYTEST_", "GITHUB_", "RUNNER_", "UV_", "COV_CORE_", "VIRTUAL")
FOREIGN_NAMES = ("PATH", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX", "HOME")


def machine_environ(index: Path, run_dirs: Path) -> dict[str, str]:
    """The runner machine's environment: this machine's (proxy, CA, locale), the package index
    holding the testfleet release (the wheel built from this checkout), no Python downloads,
    and a run-dir base of the test's own."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in FOREIGN_NAMES and not name.startswith(FOREIGN_PREFIXES)
    }
    environ.update(
        {
            "UV_FIND_LINKS": str(index),
            "UV_PYTHON_DOWNLOADS": "never",
            "TESTFLEET_RUN_DIR": str(run_dirs),
        }
    )
    return environ


@dataclass(frozen=True)
class Release:
    index: Path  # a find-links directory with the wheel
    venv: Path  # testfleet installed from it, as a user installs it
    uv: str

    def testfleet(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "testfleet"), *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
            env={**os.environ, "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}"},
        )


def make_origin(root: Path, files: dict[str, str], pyproject: str) -> Path:
    for relative, text in {**files, "pyproject.toml": pyproject}.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    git("init", "-q", "-b", "main", cwd=root)
    return root


def commit(origin: Path, message: str) -> None:
    git("add", ".", cwd=origin)
    git("commit", "-q", "-m", message, cwd=origin)


def load(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def outcomes(junit: Path) -> dict[tuple[str, str, str], str]:
    """(python, classname, name) -> passed / failure / error / skipped, each exactly once."""
    found: dict[tuple[str, str, str], str] = {}
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        for case in suite.iter("testcase"):
            key = (props.get("python") or "", case.get("classname", ""), case.get("name", ""))
            assert key not in found, f"{key} is in {junit} twice"
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            found[key] = kinds[0] if kinds else "passed"
    return found


@dataclass
class Lab:
    """One project's repository, the runner machines' environment, and the stores."""

    origin: Path
    work: Path
    env: dict[str, str]
    pythons: dict[str, str]
    release: Release
    stores: Stores
    runs: int = 0

    def workflow(self, path: str, event: dict[str, Any] | None = None) -> Workflow:
        self.runs += 1
        spec = load(self.origin / path)
        run = Run(1000 + self.runs, self.stores, event or push_event("main"))
        return Workflow(
            spec,
            run,
            self.origin,
            self.work / f"run-{self.runs}",
            self.env,
            self.pythons,
            self.release.uv,
            uv_cache=str(self.work / "uv-cache"),
            loader=lambda uses: load(self.origin / uses.removeprefix("./")),
        )


def push_event(branch: str) -> dict[str, Any]:
    return {
        "event_name": "push",
        "ref": f"refs/heads/{branch}",
        "ref_name": branch,
        "head_ref": "",
        "event": {"repository": {"default_branch": "main"}},
    }


def one_machine(lab: Lab, versions: list[str]) -> Path:
    """The same project run on one machine, with the command a developer runs; its clone."""
    clone = lab.work / "one-machine"
    git("clone", "-q", str(lab.origin), str(clone), cwd=lab.work)
    single = subprocess.run(
        [str(lab.release.venv / "bin" / "testfleet"), "run", "--python", ",".join(versions)],
        cwd=clone,
        env={**lab.env, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert single.returncode == 1, single.stderr  # the suite has a failing test
    assert len(outcomes(clone / ".testfleet" / "junit.xml")) == TESTS * len(versions)
    return clone


def line_rate(coverage_xml: Path) -> float:
    return float(ET.parse(coverage_xml).getroot().get("line-rate", "nan"))
