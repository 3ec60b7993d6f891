"""What the coordinator knows of each lane: its process and connection, the test it runs
and since when, what it ran, and the end of its output for error messages."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

LOG_TAIL_LINES = 20
FAULT_LINES = 40


@dataclass
class LaneState:
    lane: int
    group: str = ""
    process: subprocess.Popen[bytes] | None = None
    conn: socket.socket | None = None
    log_path: Path | None = None
    collected: bool = False
    current: str | None = None
    started_at: float = 0.0
    spawned_at: float = 0.0
    busy: float = 0.0  # sum of the durations of the tests it ran
    wall: float = 0.0  # time its processes were alive
    startup: float = 0.0  # spawn to collection reported (the first process only)
    tests: int = 0
    # Told there is no more work (or it said it stops): from then on it only ends. When it
    # also holds no test, since when: the bound on its exit counts from there (lingering.py).
    done: bool = False
    idle_since: float | None = None
    # What this lane's current process ran, in order: what ran before a test that failed.
    history: list[str] = field(default_factory=list)

    def doing(self, now: float) -> str:
        """What progress shows of it."""
        if self.process is None:
            return "finished"
        if self.current is not None:
            return f"{self.current} ({now - self.started_at:.1f} s)"
        if self.idle_since is not None:
            return f"exiting after its last test ({now - self.idle_since:.0f} s)"
        return "between tests" if self.collected else "collecting"

    def log_tail(self) -> str:
        """The end of the lane's output; a Python fault dump (faulthandler) when there is one,
        since it names the test's own frames where the tail shows only pytest's."""
        if self.log_path is None:
            return ""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for index in range(len(lines) - 1, -1, -1):
            # pytest's progress dots may share the line: ".Fatal Python error: ..."
            start = lines[index].find("Fatal Python error")
            if start >= 0:
                return "\n".join([lines[index][start:], *lines[index + 1 : index + FAULT_LINES]])
        return "\n".join(lines[-LOG_TAIL_LINES:])


def timed_out(timeout: float) -> str:
    """How a test that ran past the test timeout is reported, by lanes and rechecks alike."""
    return f"timed out after {timeout:g} s"


def overdue(started_at: float, now: float, timeout: float | None) -> bool:
    """Whether a test seen starting at `started_at` has run past the test timeout: the one
    rule of the lanes (coordinator.py) and of reruns and rechecks (recheck/watch.py)."""
    return timeout is not None and now - started_at > timeout
