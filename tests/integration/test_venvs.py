"""Real venvs made with uv for a tiny project: pytest runs in them, testfleet is not in
them, a second run reuses them, and an edited pyproject.toml rebuilds them.

Network use is small: hatchling (the tiny project's build backend) and pytest from PyPI, once
per uv cache.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from testfleet import venvs
from testfleet.project import Project, validate
from testfleet.venvs.fingerprint import FINGERPRINT_NAME
from testfleet.venvs.uv import UvOutput, UvRunner, find_uv

pytestmark = pytest.mark.integration

RUNNING = f"{sys.version_info[0]}.{sys.version_info[1]}"

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tinyproj"
version = "0.1"
requires-python = ">=3.10"
dependencies = []

[dependency-groups]
test = ["pytest"]
"""

TEST_FILE = """\
import sys

import tinyproj


def test_runs_on_the_asked_version():
    assert tinyproj.ANSWER == 42
    assert ".".join(map(str, sys.version_info[:3])) == "{version}"
"""


def other_version() -> str:
    """An installed CPython X.Y (3.10 or newer) other than the running one."""
    for version in venvs.installed_pythons():
        x_y = ".".join(version.split(".")[:2])
        if x_y != RUNNING and int(x_y.split(".")[1]) >= 10:
            return x_y
    pytest.skip(f"only Python {RUNNING} is installed here; a second version is needed")


def tiny_project(root: Path, **table: object) -> Project:
    (root / "src" / "tinyproj").mkdir(parents=True)
    (root / "src" / "tinyproj" / "__init__.py").write_text("ANSWER = 42\n")
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    return Project(root, validate({"dependency-groups": ["test"], **table}))


def run(python: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


class UvCalls:
    """Records every uv command line testfleet runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []
        original = UvRunner.run

        def spy(uv: UvRunner, args: Sequence[str], **kwargs: object) -> UvOutput:
            self.calls.append(list(args))
            return original(uv, args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(UvRunner, "run", spy)


def test_a_venv_per_version_runs_pytest_without_testfleet_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two versions built side by side: pytest runs the project's tests on each, testfleet
    and its dependencies are not importable there; a second prepare only reuses them; an
    edited pyproject.toml rebuilds them."""
    second = other_version()
    project = tiny_project(tmp_path / "proj", python=[RUNNING, second])
    uv = UvCalls(monkeypatch)
    said: list[str] = []
    targets = venvs.prepare_targets(project, say=said.append)

    assert [t.label for t in targets] == [RUNNING, second]
    for target in targets:
        assert not target.reused
        assert target.venv_dir == project.root / ".testfleet" / "envs" / target.label
        assert target.version.startswith(target.label + ".")
        assert target.python == str(target.venv_dir / "bin" / "python")
        (project.root / "tests" / "test_tiny.py").write_text(
            TEST_FILE.format(version=target.version)
        )
        tests = run(target.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project.root)
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert "1 passed" in tests.stdout
        for module in ("testfleet", "psycopg", "pydantic", "rich"):
            probe = run(target.python, "-c", f"import {module}", cwd=tmp_path)
            assert probe.returncode != 0, f"{module} is importable in the {target.label} venv"
            assert "ModuleNotFoundError" in probe.stderr
    assert any(f"python {second}: environment" in line and "made in" in line for line in said)
    # pytest came from the project's own `test` group: nothing was added.
    assert not [line for line in said if line.startswith("pytest is not among")]

    fingerprints = {t.label: t.venv_dir / FINGERPRINT_NAME for t in targets if t.venv_dir}
    stamps = {label: path.stat().st_mtime_ns for label, path in fingerprints.items()}
    uv.calls.clear()
    said.clear()
    again = venvs.prepare_targets(project, say=said.append)
    assert [t.reused for t in again] == [True, True]
    assert [t.python for t in again] == [t.python for t in targets]
    assert uv.calls == [["--version"]], "a reused venv runs no uv build step"
    assert {label: path.stat().st_mtime_ns for label, path in fingerprints.items()} == stamps
    assert sorted(said) == sorted(
        f"python {label}: environment .testfleet/envs/{label} is up to date (reused)"
        for label in (RUNNING, second)
    )

    before = {label: path.read_text() for label, path in fingerprints.items()}
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1"', 'version = "0.2"'))
    rebuilt = venvs.prepare_targets(project, say=lambda _: None)
    assert [t.reused for t in rebuilt] == [False, False]
    for label, path in fingerprints.items():
        assert path.read_text() != before[label]
    version = run(
        rebuilt[1].python,
        "-c",
        "import importlib.metadata as m; print(m.version('tinyproj'))",
        cwd=tmp_path,
    )
    assert version.stdout.strip() == "0.2"


def test_a_locked_project_is_synced_and_gets_coverage_for_coverage_runs(tmp_path: Path) -> None:
    """With uv.lock the venv is synced from the lock (its `test` group brings pytest); with
    --coverage, coverage is added; testfleet is still absent."""
    project = tiny_project(tmp_path / "proj", python=[RUNNING], coverage=True)
    locked = subprocess.run(
        [str(find_uv()), "lock", "--project", str(project.root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert locked.returncode == 0, locked.stderr
    said: list[str] = []
    (target,) = venvs.prepare_targets(project, say=said.append)
    assert target.venv_dir is not None
    assert (target.venv_dir / FINGERPRINT_NAME).is_file()
    listed = run(
        target.python,
        "-c",
        "import coverage, pytest, tinyproj; print(tinyproj.ANSWER)",
        cwd=tmp_path,
    )
    assert listed.returncode == 0, listed.stderr
    assert run(target.python, "-c", "import testfleet", cwd=tmp_path).returncode != 0
    assert [line for line in said if line.startswith("coverage is not among")]
    assert not [line for line in said if line.startswith("pytest is not among")]
