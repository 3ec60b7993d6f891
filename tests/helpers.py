"""Shared test helpers: projects from dicts, and the process table."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from testfleet.project import Project, validate
from testfleet.rundir import PIDS_NAME, process_start_ticks

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "bookshop"


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held while a test uses something of the machine's that a second copy of the suite,
    running at the same time, would use too (the well-known port a hard-coded suite needs)."""
    with (Path(tempfile.gettempdir()) / f"testfleet-tests-{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def project(root: Path, table: Mapping[str, Any]) -> Project:
    return Project(root=root, config=validate(dict(table)))


def recorded_pids(run_dir: Path) -> list[tuple[int, int]]:
    text = (run_dir / PIDS_NAME).read_text()
    return [(int(a), int(b)) for a, b in (line.split() for line in text.splitlines())]


def alive(pids: Iterable[tuple[int, int]]) -> list[int]:
    """Recorded processes that still run (same pid *and* start time), zombies excluded."""
    left = []
    for pid, ticks in pids:
        if process_start_ticks(pid) != ticks:
            continue
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            continue
        left.append(pid)
    return left


def wait_for(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testfleet", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def write_pyproject(root: Path, body: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n\n' + body)
    return root


def start_cli(
    project: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """The CLI in the background, its stderr readable line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "testfleet", *args],
        cwd=project,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_up(process: subprocess.Popen[str]) -> list[str]:
    """Read a background `testfleet up`'s stderr until its stack serves; the lines read."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "Ctrl-C stops the stack" in line:
            return lines
    raise AssertionError("up ended before its stack was ready: " + "".join(lines))
