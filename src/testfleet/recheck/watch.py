"""One recheck's pytest, watched as the coordinator watches a lane: each test is stopped when
it runs past the test timeout (counted from when its start is seen, as in lanes), the whole
pytest when it runs past its own limit or the run's timeout. What the pytest did comes from
the events its reporter appends as they happen (worker/recheck.py), so a pytest killed under
a test still tells what finished before it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from testfleet.lanes.state import overdue
from testfleet.processes import ManagedProcess

TICK_SECONDS = 0.05


@dataclass
class Watched:
    """What one recheck's pytest did, as far as it got."""

    outcomes: dict[str, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)  # tests whose outcome is final
    collection_errors: dict[str, str] = field(default_factory=dict)
    code: int | None = None  # pytest's exit code; None: it was stopped
    overdue: str | None = None  # the test it was stopped under, past the test timeout
    took: float = 0.0  # how long that test had run
    out_of_time: bool = False  # stopped at its own limit, or at the run's deadline
    deadline_struck: bool = False  # stopped at the run's deadline


class _Events:
    """Reads the lines the reporter appended since the last read; a line it is still
    writing waits for the next read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, str]]:
        try:
            with open(self.path, "rb") as source:
                source.seek(self._offset)
                data = source.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not the reporter's: nothing to learn from it
            if isinstance(event, dict):
                events.append(event)
        return events


def watch(
    process: ManagedProcess,
    events: Path,
    *,
    test_timeout: float | None,
    limit: float,
    deadline: float | None,
) -> Watched:
    """Wait for the recheck's pytest to end, or stop it (its whole group) at the first limit
    it reaches; also on Ctrl-C. What it did is returned either way."""
    began = time.monotonic()
    stop_at = began + limit if deadline is None else min(began + limit, deadline)
    watched = Watched()
    reader = _Events(events)
    running: tuple[str, float] | None = None  # the test it runs now, since when
    try:
        while True:
            code = process.popen.poll()  # before reading: an ended pytest has written all
            now = time.monotonic()
            for event in reader.read():
                nodeid = str(event.get("nodeid", ""))
                kind = event.get("event")
                if kind == "start":
                    running = (nodeid, now)
                elif kind == "finish":
                    running = None
                    watched.finished.add(nodeid)
                elif kind == "outcome":
                    watched.outcomes[nodeid] = str(event.get("outcome"))
                elif kind == "collection_error":
                    watched.collection_errors[nodeid] = str(event.get("error"))
            if code is not None:
                watched.code = code
                return watched
            if running is not None and overdue(running[1], now, test_timeout):
                watched.overdue, watched.took = running[0], now - running[1]
                return watched
            if now >= stop_at:
                watched.out_of_time = True
                watched.deadline_struck = deadline is not None and now >= deadline
                return watched
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(min(TICK_SECONDS, max(stop_at - now, 0.0)))
    finally:
        # Whatever the tests started goes with the pytest (and at once on Ctrl-C).
        process.kill()
