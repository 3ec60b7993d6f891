"""Fixtures more than one folder of tests uses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testfleet import __version__
from tests.e2e.ci_lab import STEP_TIMEOUT, Release
from tests.helpers import REPO


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_raises() -> Iterator[None]:
    """The tests of Ctrl-C handling need SIGINT to raise KeyboardInterrupt, as in a terminal's
    pytest. A suite started as a background job of a non-interactive shell (`pytest &` in a
    script, some CI runners) inherits SIGINT ignored, and Python then installs no handler."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


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


@pytest.fixture
def own_run_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A run-dir base of the test's own, set as TESTFLEET_RUN_DIR for every testfleet it starts:
    a test looks only at the runs it started, never at a developer's `up` or another copy of
    the suite under /dev/shm/testfleet-UID. Short (unix sockets live under it), on tmpfs when
    there is one, and enterable by PostgreSQL's account when the tests run as root."""
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    base = Path(tempfile.mkdtemp(prefix="tf-", dir=where))
    base.chmod(0o711)
    monkeypatch.setenv("TESTFLEET_RUN_DIR", str(base))
    yield base
    shutil.rmtree(base, ignore_errors=True)
