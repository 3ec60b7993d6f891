"""Watchdog process: when its parent dies (even by SIGKILL) its stdin pipe closes, and it
stops every process the run recorded or marked, removes the run directory, and removes the
files the run owned (the env file of `up`) when they still name this run.

A parent-death signal (PR_SET_PDEATHSIG) is not enough: it fires when the *thread* that
spawned a child exits, and the stack starts services from worker threads.

    python -m testfleet.reaper RUN_DIR RUN_ID [OWNED_FILE ...]
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

from testfleet.rundir import drop_external, kill_marked, kill_recorded, remove_containers


def remove_if_ours(path: Path, run_id: str) -> bool:
    """Remove a file the run wrote, unless another run has written it since."""
    try:
        if f"TESTFLEET_RUN_ID={run_id}" not in path.read_text(encoding="utf-8"):
            return False
        path.unlink()
    except (OSError, UnicodeDecodeError):
        return False
    return True


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    run_dir, run_id, owned = Path(argv[0]), argv[1], [Path(a) for a in argv[2:]]
    while sys.stdin.buffer.read(4096):
        pass
    # A normal teardown removed the directory before closing the pipe: then nothing is left.
    if run_dir.exists():
        kill_recorded(run_dir)
        kill_marked(str(run_dir))
        remove_containers(run_dir)
        drop_external(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        for path in owned:
            remove_if_ours(path, run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
