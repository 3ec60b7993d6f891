"""A lane kept alive after its last test by a worker a test leaked: the run still ends, keeps
every result, names the worker, and lets the tests decide its exit code."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import junitparser
import psutil
import pytest

from tests.helpers import write_pyproject

pytestmark = pytest.mark.e2e

LEAKS = (
    "import multiprocessing, os, signal, time\n"
    "def work():\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "    time.sleep(600)\n"
    "def test_leaks_a_worker():\n"
    "    worker = multiprocessing.Process(target=work)  # not a daemon: joined at exit\n"
    "    worker.start()\n"
    "    with open('worker.pid', 'w') as f:\n"
    "        f.write(str(worker.pid))\n"
    "def test_after_the_leak(): pass\n"
)
OTHER = "def test_one(): pass\ndef test_fails(): assert 1 == 2\n"
# Long enough for a loaded machine to run the suite; a run that hangs fails the test here.
RUN_LIMIT = 180


def run_bounded(project: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """The CLI, stopped with SIGTERM (which stops its lanes) if it runs past RUN_LIMIT."""
    process = subprocess.Popen(
        [sys.executable, "-m", "testfleet", *args],
        cwd=project,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=RUN_LIMIT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        pytest.fail(f"the run did not end within {RUN_LIMIT} s:\n{stderr}")
    return process.returncode, stderr


def test_a_lane_kept_alive_by_a_leaked_worker_is_stopped_and_the_worker_named(
    tmp_path: Path, own_run_base: Path
):
    """The lane is stopped a bound after its last test, the notice names the worker's pid,
    every result is kept, and the exit code is the tests' (one failed: 1), no test blamed."""
    project = write_pyproject(tmp_path / "p", "[tool.testfleet]\n")
    (project / "tests").mkdir()
    (project / "tests" / "test_leak.py").write_text(LEAKS)
    (project / "tests" / "test_other.py").write_text(OTHER)
    junit = tmp_path / "junit.xml"
    worker = None
    try:
        code, stderr = run_bounded(
            project,
            "run",
            "-n",
            "2",
            "--junit-xml",
            str(junit),
            env={"TESTFLEET_LANE_EXIT_SECONDS": "1"},
        )
        worker = int((project / "worker.pid").read_text())
        assert code == 1, stderr
        assert "1 failed, 3 passed" in stderr
        assert "finished its tests but had not exited 1 s later" in stderr
        assert f"pid {worker}: " in stderr, stderr
        notice = next(line for line in stderr.splitlines() if "had not exited" in line)
        assert "test_leak.py" not in notice  # no test is blamed
        cases = {
            f"{c.classname}::{c.name}": c
            for suite in junitparser.JUnitXml.fromfile(str(junit))
            for c in suite
        }
        assert len(cases) == 4
        assert sum(1 for c in cases.values() if c.is_passed) == 3
        assert not psutil.pid_exists(worker) or (
            psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
        )
        assert list(own_run_base.iterdir()) == []
    finally:
        if worker is not None:  # the old code leaves it when it is stopped from here
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
