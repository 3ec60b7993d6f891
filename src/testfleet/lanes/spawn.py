"""Starting a lane's pytest process: the early lane handed its work (see early.py), or a new
process; each in its own process group, so that ending a lane ends what its tests forked too.
One interactive lane gets the terminal, so that `--pdb` reads from it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from testfleet.files import open_private
from testfleet.lanes.early import EarlyLane


@dataclass
class LaneLaunch:
    """How to start lane N: its argv, its env, where its output goes."""

    argv: Callable[[int], Sequence[str]]
    env: Callable[[int], Mapping[str, str]]
    log_path: Callable[[int], Path | None]  # None: the terminal (one lane, interactive)
    cwd: Path
    foreground: bool = False  # give the lane the terminal (for --pdb with one lane)
    # Told every lane pid as soon as it exists, so the run's reaper and the next run's stale
    # cleanup can stop a lane that outlives a killed testfleet.
    on_spawn: Callable[[int], None] = lambda pid: None
    # Which group (Python version) lane N belongs to.
    group: Callable[[int], str] = lambda lane: ""
    # Lane N's process when it was started before its services (handed over at its spawn).
    early: Callable[[int], EarlyLane | None] = lambda lane: None


def spawn(launch: LaneLaunch, lane: int) -> subprocess.Popen[bytes]:
    """Lane `lane`'s process, started (or handed over) and announced through `on_spawn`."""
    log_path = launch.log_path(lane)
    output: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        output = os.fdopen(open_private(log_path), "ab")
    try:
        process = _hand_over(launch, lane, output)
        if process is None:
            process = subprocess.Popen(
                list(launch.argv(lane)),
                cwd=launch.cwd,
                env=dict(launch.env(lane)),
                stdin=None if launch.foreground else subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                # Its own process group: ending a lane ends what its tests forked too.
                preexec_fn=os.setpgrp,  # noqa: PLW1509 - spawned from the main thread only
            )
    finally:
        if output is not None:
            output.close()
    launch.on_spawn(process.pid)
    if launch.foreground:
        give_terminal(process.pid)
    return process


def _hand_over(
    launch: LaneLaunch, lane: int, output: IO[bytes] | None
) -> subprocess.Popen[bytes] | None:
    """Lane `lane`'s early process, told what to run (None: there is none, or it died)."""
    early = launch.early(lane)
    if early is None:
        return None
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        out, err = (output.fileno(), output.fileno()) if output is not None else (1, 2)
        stdio = (0 if launch.foreground else devnull, out, err)
        argv = list(launch.argv(lane))
        if argv[1:3] != ["-m", "pytest"]:  # wrapped (nsenter): started the usual way
            early.discard()
            return None
        # The early lane already runs Python: it is handed pytest's own arguments.
        return early.hand_over(argv[3:], launch.env(lane), str(launch.cwd), stdio)
    finally:
        os.close(devnull)


def kill(process: subprocess.Popen[bytes]) -> None:
    """The lane's whole process group, at once; reaped."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def give_terminal(pgid: int) -> None:
    """One interactive lane owns the terminal, so `--pdb` can read from it."""
    with contextlib.suppress(OSError):
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(0, pgid)
        finally:
            signal.signal(signal.SIGTTOU, old)


def take_terminal_back() -> None:
    with contextlib.suppress(OSError):
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(0, os.getpgrp())
        finally:
            signal.signal(signal.SIGTTOU, old)
