"""`testfleet run --python X.Y` killed with SIGKILL while uv builds the version's venv: the
run's reaper stops uv (and the build under it), so the next run builds at once instead of
waiting behind the lock that uv held."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testfleet.processes import group_running
from testfleet.venvs.uv import find_uv_or_none
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

RUNNING = f"{sys.version_info[0]}.{sys.version_info[1]}"

PYPROJECT = f"""\
[build-system]
requires = []
build-backend = "slow_backend"
backend-path = ["_backend"]

[project]
name = "slowproj"
version = "0.1"
dependencies = ["pytest"]

[tool.testfleet]
python = ["{RUNNING}"]
"""

# An in-tree build backend (no download): with SLOW_BUILD set it writes who it is and waits
# while the file `hold` exists, so the first run is killed mid-build, deterministically.
BACKEND = """\
import base64, hashlib, json, os, pathlib, time, zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIST = "slowproj-0.1.dist-info"


def _hold():
    if os.environ.get("SLOW_BUILD"):
        (ROOT / "backend.json").write_text(
            json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgrp()})
        )
        while (ROOT / "hold").exists():
            time.sleep(0.1)


def _wheel(directory, files):
    files = {
        **files,
        f"{DIST}/METADATA": "Metadata-Version: 2.1\\nName: slowproj\\nVersion: 0.1\\n"
        "Requires-Dist: pytest\\n",
        f"{DIST}/WHEEL": "Wheel-Version: 1.0\\nGenerator: slow\\nRoot-Is-Purelib: true\\n"
        "Tag: py3-none-any\\n",
    }
    name, record = "slowproj-0.1-py3-none-any.whl", []
    with zipfile.ZipFile(os.path.join(directory, name), "w") as wheel:
        for path, text in files.items():
            data = text.encode()
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
        wheel.writestr(f"{DIST}/RECORD", "\\n".join([*record, f"{DIST}/RECORD,,"]) + "\\n")
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _hold()
    return _wheel(wheel_directory, {"slowproj.py": "ANSWER = 42\\n"})


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _hold()
    return _wheel(wheel_directory, {"slowproj.pth": str(ROOT / "src") + "\\n"})
"""


@pytest.fixture
def run_base(own_run_base: Path) -> Iterator[Path]:
    """The test's own run-dir base (conftest.py); nothing may be left in it."""
    yield own_run_base
    left = list(own_run_base.iterdir())
    assert not left, f"runs left {left}"


def slow_project(root: Path) -> Path:
    (root / "_backend").mkdir(parents=True)
    (root / "_backend" / "slow_backend.py").write_text(BACKEND)
    (root / "src" / "slowproj").mkdir(parents=True)
    (root / "src" / "slowproj" / "__init__.py").write_text("ANSWER = 42\n")
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "test_it.py").write_text(
        "import slowproj\n\ndef test_it():\n    assert slowproj.ANSWER\n"
    )
    return root


def test_uv_goes_with_a_run_killed_while_it_builds(tmp_path: Path, run_base: Path):
    """SIGKILL while uv runs the project's build: uv and the build are gone within seconds
    (the reaper's doing: nothing else is left to stop them), and a second run makes the
    venv without waiting for another build."""
    if find_uv_or_none() is None:
        pytest.skip("uv is not installed")
    project = slow_project(tmp_path / "proj")
    (project / "hold").touch()
    env = {**os.environ, "TESTFLEET_RUN_DIR": str(run_base)}
    first = subprocess.Popen(
        [sys.executable, "-m", "testfleet", "run"],
        cwd=project,
        env={**env, "SLOW_BUILD": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    build: dict[str, int] = {}
    try:
        wait_for(
            lambda: (project / "backend.json").exists() or first.poll() is not None,
            timeout=180,
            what="uv to run the project's build backend",
        )
        assert first.poll() is None, "the first run ended before its build"
        build = json.loads((project / "backend.json").read_text())
        # The build runs under uv, in uv's own process group.
        assert Path(f"/proc/{build['ppid']}/comm").read_text().strip() == "uv"
        assert build["pgid"] == build["ppid"]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        wait_for(
            lambda: not group_running(build["pgid"]),
            timeout=15,
            what="uv and its build to be stopped after testfleet was killed",
        )

        # `hold` is still there: a uv left running would still hold its lock.
        second = subprocess.run(
            [sys.executable, "-m", "testfleet", "run"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert second.returncode == 0, second.stderr
        assert "waiting for another testfleet" not in second.stderr
        made = re.search(
            rf"environment \.testfleet/envs/{RUNNING} made in ([\d.]+) s", second.stderr
        )
        assert made is not None, second.stderr
        assert float(made.group(1)) < 60, second.stderr
    finally:
        (project / "hold").unlink(missing_ok=True)
        if first.poll() is None:
            first.kill()
            first.wait()
        if build:  # before the fix: uv and the build outlive the run; stopped here
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(build["pgid"], signal.SIGKILL)
