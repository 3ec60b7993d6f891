"""Fixtures more than one folder of tests uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testfleet import __version__
from tests.e2e.ci_lab import STEP_TIMEOUT, Release
from tests.helpers import REPO


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """testfleet as a release: `uv build` of a copy of this checkout, installed by version
    from a local index into a venv of its own."""
    uv = shutil.which("uv", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert uv, "uv is missing: install testfleet's dev extra"
    base = tmp_path_factory.mktemp("release")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    index = base / "index"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(index), str(source)],
        check=True,
        capture_output=True,
        timeout=STEP_TIMEOUT,
    )
    assert [p.name for p in index.glob("*.whl")] == [f"testfleet-{__version__}-py3-none-any.whl"]
    venv = base / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "--find-links",
            str(index),
            f"testfleet=={__version__}",
        ],
        check=True,
        capture_output=True,
        timeout=STEP_TIMEOUT,
    )
    return Release(index, venv, uv)
