"""A lane that finished its tests but does not exit: something it started keeps it alive (a
non-daemon `multiprocessing` worker that Python joins at exit, a non-daemon thread, a child
that ignores SIGTERM). It gets a bounded time to exit after its last test; then its process
group is stopped, and what kept it alive is named from /proc, once, in a notice.

Such a lane does not fail the run, and no test is blamed: the tests decide the outcome.
Every result of the lane was in before it was told there is no more work, so nothing it could
still do changes one; what was left running is stopped, not left behind. Failing the run
instead would turn a passing suite red for a leak that changes no result and that a re-run
would not fix (under plain pytest the same suite hangs at exit). The notice says, once and
plainly, which processes they were, so the leak can be found and fixed in the suite."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from testfleet.lanes.state import LaneState
from testfleet.rundir import stat_fields

# Seconds a lane gets to exit after its last test. Past its last result a lane only ends its
# pytest session (plugins' sessionfinish, coverage data saved) and its interpreter: seconds
# at most, also on a loaded machine; session-scoped fixtures are torn down with the last test.
EXIT_GRACE_SECONDS = 30.0
# Changes the bound (the tests make it small).
GRACE_VARIABLE = "TESTFLEET_LANE_EXIT_SECONDS"
MAX_NAMED = 5
MAX_COMMAND = 200
# How long the processes a lane left get to die after their SIGKILL.
KILL_SECONDS = 5.0


def exit_grace(environ: Mapping[str, str]) -> float:
    """The bound, from TESTFLEET_LANE_EXIT_SECONDS when it holds a positive number."""
    with contextlib.suppress(ValueError):
        seconds = float(environ.get(GRACE_VARIABLE, ""))
        if seconds > 0:
            return seconds
    return EXIT_GRACE_SECONDS


def check(state: LaneState, holding: bool, now: float, grace: float) -> str | None:
    """A lane told there is no more work, holding no test and running none, is stopped
    `grace` seconds after that began, with the notice that names what kept it (None while it
    may still exit by itself)."""
    if state.process is None or not state.done or holding or state.current is not None:
        state.idle_since = None
        return None
    if state.idle_since is None:
        state.idle_since = now
    if now - state.idle_since < grace:
        return None
    said = stop(state.lane, state.process.pid, grace)
    state.process.wait()  # gone before the next look, which would name it again
    return said


def at_deadline(state: LaneState, now: float) -> str | None:
    """When the run's timeout comes, a lane that finished and has not exited yet is stopped
    and named too: what held the run up was not a slow test."""
    if state.process is None or state.idle_since is None:
        return None
    said = stop(state.lane, state.process.pid, now - state.idle_since)
    state.process.wait()
    return said


def holders(pid: int) -> list[int]:
    """What keeps lane process `pid` alive: the other processes of its group (its own, as a
    lane's), and its descendants that left the group (setsid); in pid order."""
    parents: dict[int, int] = {}
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is None or fields[0] == "Z":
            continue
        other = int(entry.name)
        parents[other] = int(fields[1])
        if int(fields[2]) == pid and other != pid:
            found.add(other)
    for other in parents:
        seen, ancestor = set(), parents.get(other)
        while ancestor is not None and ancestor not in seen and ancestor > 1:
            if ancestor == pid:
                found.add(other)
                break
            seen.add(ancestor)
            ancestor = parents.get(ancestor)
    return sorted(found)


def command_line(pid: int) -> str:
    """A process's command line as ps shows it, cut short; its name when it has none."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raw = b""
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    if not text:
        with contextlib.suppress(OSError):
            text = "[" + Path(f"/proc/{pid}/comm").read_text().strip() + "]"
    return text if len(text) <= MAX_COMMAND else text[: MAX_COMMAND - 3] + "..."


def stop(lane: int, pid: int, grace: float) -> str:
    """Stop lane `lane` (process `pid`, the leader of its group) and what keeps it alive;
    the notice that names them."""
    kept = [(other, command_line(other)) for other in holders(pid)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for other, _ in kept:  # descendants that left the group: they would outlive the lane
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(other, signal.SIGKILL)
    # A SIGKILL takes effect when the kernel next schedules the process (late on a loaded
    # machine): the notice says they were stopped, so they are gone (or dead, unreaped) first.
    deadline = time.monotonic() + KILL_SECONDS
    for other, _ in kept:
        while _running(other) and time.monotonic() < deadline:
            time.sleep(0.01)
    return notice(lane, pid, grace, kept)


def _running(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def notice(lane: int, pid: int, grace: float, kept: list[tuple[int, str]]) -> str:
    head = (
        f"lane {lane} (pid {pid}) finished its tests but had not exited {grace:g} s later;"
        " it was stopped, and its results stand"
    )
    if not kept:
        return (
            f"{head}. No other process was left in it: a non-daemon thread or an exit"
            " handler of a test kept it alive"
        )
    named = "; ".join(f"pid {other}: {command}" for other, command in kept[:MAX_NAMED])
    more = f"; and {len(kept) - MAX_NAMED} more" if len(kept) > MAX_NAMED else ""
    return (
        f"{head}. What a test started and left running kept it alive (a non-daemon"
        f" multiprocessing worker is joined when Python exits), stopped with it: {named}{more}"
    )
