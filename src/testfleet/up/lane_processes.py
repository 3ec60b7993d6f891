"""The lane processes of a run that uses an up: which ones the up believes, and stopping them.

A run names every lane process it starts (pid and start time), so that when the run is killed
the up stops them before their lane goes to another run (they could still write into it).
Whatever a run names, the up believes only what the kernel shows when the name arrives: the
process runs, started at the time named, leads a process group of its own (every lane does,
and a lane is stopped as a whole group), and its parent is the process at the other end of the
connection (SO_PEERCRED). That leaves out pid 0 and 1 (`killpg(1)` is `kill(-1)`: every
process there is), the up, the run itself and whatever it did not start. When the lane is
stopped, the start time must match again: a pid that was reused is someone else's.

The run's mark (`_TESTFLEET_RUN` in the environment) proves nothing here: a lane started
early runs before its run has a mark, and a mark a run names could be another run's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time

from testfleet.rundir import stat_fields

# How long a killed run's lanes get to end before their lane is recycled under them.
LANE_EXIT_SECONDS = 5.0
# SO_PEERCRED's struct ucred: pid, uid, gid.
_UCRED = struct.Struct("3i")


def peer_pid(conn: socket.socket) -> int:
    """The process at the other end of a unix socket as the kernel saw it connect; 0 when
    it cannot be told (it is in a pid namespace this one cannot see)."""
    try:
        credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return 0
    return int(_UCRED.unpack(credentials)[0])


def refusal(pid: int, ticks: int, run: int) -> str | None:
    """Why `pid` is not a lane process of the run at `run` (its process), or None when it is.
    "gone" when it has ended already: nothing to stop, nothing to say."""
    if pid <= 1 or run <= 1 or pid in (run, os.getpid(), os.getpgrp()):
        return "it is no lane of the run"
    fields = stat_fields(pid)
    if fields is None:
        return "gone"
    # From field 3 on: 4 the parent, 5 the process group, 22 the start time.
    parent, group, started = int(fields[1]), int(fields[2]), int(fields[19])
    if started != ticks:
        return "its start time is not the one named"
    if parent != run:
        return "the run did not start it"
    if group != pid:
        return "it leads no process group of its own"
    return None


def stop(pids: tuple[tuple[int, int], ...]) -> None:
    """A gone run's lanes (whole process groups), if they still run: they must not write into
    the lane's next database. Only pids `refusal` let in come here; each is checked again."""
    deadline = time.monotonic() + LANE_EXIT_SECONDS
    for pid, ticks in pids:
        while _same(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _same(pid, ticks) and pid > 1 and pid != os.getpgrp():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:  # still the leader of its own group
                    os.killpg(pid, signal.SIGKILL)


def _same(pid: int, ticks: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and int(fields[19]) == ticks
