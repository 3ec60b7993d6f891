"""Ctrl-C at any moment of start-up, also while testfleet is still importing itself, is the
one line "interrupted" and exit 130, never a traceback; lane 1's interpreter, which `run`
starts before the rest of testfleet is imported, is stopped with it."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import testfleet
from testfleet.errors import ExitCode
from tests.helpers import write_pyproject

pytestmark = pytest.mark.e2e

INTERRUPTED = "testfleet: interrupted; everything started was stopped\n"
SOURCE = Path(testfleet.__file__).parent

# The installed `testfleet` script, with two additions: SIGINT to itself as the module
# `target` starts to import (so the KeyboardInterrupt comes from inside that import, exactly
# where a Ctrl-C at that moment would raise it), and the pid of every process it starts.
INTERRUPTS_WHILE_IMPORTING = """\
import os, signal, subprocess, sys

target, pids = sys.argv[1], sys.argv[2]
if sys.argv[3:] == ["ignored"]:  # as a shell starts a background job
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Interrupt:
    def find_spec(self, name, path=None, module=None):
        if name == target:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None


start = subprocess.Popen.__init__


def recorded(self, *args, **kwargs):
    start(self, *args, **kwargs)
    with open(pids, "a") as out:
        out.write(f"{self.pid}\\n")


subprocess.Popen.__init__ = recorded
sys.meta_path.insert(0, Interrupt())
sys.argv = ["testfleet", "run"]
from testfleet.entry import main

raise SystemExit(main())
"""


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """What is started here gets SIGINT's default action: a shell starts a background job
    (say, a test run with `&`) with SIGINT ignored, and a child would inherit that."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def small_project(root: Path, test_body: str = "pass") -> Path:
    project = write_pyproject(root, "[tool.testfleet]\n")
    (project / "test_a.py").write_text(f"def test_a():\n    {test_body}\n")
    return project


def running(pids: list[int]) -> list[int]:
    """Those of `pids` that still run (a zombie has stopped)."""
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.mark.parametrize(
    "target",
    [
        "testfleet.lanes.early",  # the first import of the command
        "testfleet.credentials",  # while lane 1 is being started
        "testfleet.cli",  # lane 1 runs; the rest of testfleet is about to be imported
        "pydantic",  # deep in those imports (where the 9-frame traceback came from)
        # Imported by pydantic-core's native code as it loads: the KeyboardInterrupt there
        # became a Rust panic (pyo3's PanicException), not an interrupt.
        "datetime",
        "testfleet.commands.run",  # the command's own module
    ],
)
def test_ctrl_c_while_importing_is_one_line_and_130(
    tmp_path: Path, own_run_base: Path, target: str
):
    """Whichever import a Ctrl-C lands in: one line, exit 130, and lane 1 stopped at once."""
    interrupted_while_importing(tmp_path, own_run_base, target)


@pytest.mark.parametrize("target", ["testfleet.lanes.early", "pydantic"])
def test_kill_int_of_a_background_job_while_importing_is_one_line_and_130(
    tmp_path: Path, own_run_base: Path, target: str
):
    """Started with SIGINT ignored (a shell's `testfleet up &`), SIGINT still stops it, from
    the start as later on (cli.main makes the same choice)."""
    interrupted_while_importing(tmp_path, own_run_base, target, "ignored")


def interrupted_while_importing(tmp_path: Path, run_base: Path, target: str, *how: str) -> None:
    project = small_project(tmp_path / "p")
    pids = tmp_path / "pids"
    pids.touch()
    with sigint_not_ignored():
        result = subprocess.run(
            [sys.executable, "-c", INTERRUPTS_WHILE_IMPORTING, target, str(pids), *how],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.stderr == INTERRUPTED
    assert result.returncode == ExitCode.INTERRUPTED
    started = [int(line) for line in pids.read_text().split()]
    # Checked at once: a lane left behind would still be importing pytest now.
    assert running(started) == [], f"left running: {started}"
    assert list(run_base.iterdir()) == []


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2])
def test_ctrl_c_early_in_a_real_run_is_one_line_and_130(
    tmp_path: Path, own_run_base: Path, delay: float
):
    """`testfleet run` given SIGINT `delay` seconds after it was started (whatever it is doing
    then: importing, starting lane 1, loading the config, running the lane)."""
    project = small_project(tmp_path / "p", "__import__('time').sleep(30)")
    with sigint_not_ignored():
        process = subprocess.Popen(
            [sys.executable, "-m", "testfleet", "run"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    time.sleep(delay)  # the moment of the Ctrl-C is what the test varies
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert list(own_run_base.iterdir()) == []
    if stderr.endswith(INTERRUPTED):
        assert process.returncode == ExitCode.INTERRUPTED, stderr
        assert "Traceback" not in stderr
        return
    # The interpreter's own start, before the first line of testfleet runs: killed by the
    # signal before Python has a handler for it, or a traceback of Python's own start-up
    # (site, runpy). Out of testfleet's reach, and not one of its frames may be in it.
    assert process.returncode != 0
    assert str(SOURCE) not in stderr, stderr
