"""Watchdog process: when its parent dies (even by SIGKILL) its stdin pipe closes, and it
stops every process the run recorded and removes the run directory.

A parent-death signal (PR_SET_PDEATHSIG) is not enough: it fires when the *thread* that
spawned a child exits, and the stack starts services from worker threads.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

from testfleet.rundir import kill_recorded


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    run_dir = Path(argv[0])
    while sys.stdin.buffer.read(4096):
        pass
    # A normal teardown removed the directory before closing the pipe: then nothing is left.
    if run_dir.exists():
        kill_recorded(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
