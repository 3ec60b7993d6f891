"""A lane that finished its tests but does not exit, and the run's one clock, with fake lanes
that speak the lane protocol (as in test_coordinator.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from testfleet.lanes import lingering
from testfleet.lanes.coordinator import Coordinator
from testfleet.lanes.outcome import RunOutcome
from testfleet.lanes.progress import Snapshot
from testfleet.lanes.queue import LaneQueue
from testfleet.lanes.spawn import LaneLaunch
from testfleet.plan import work_source

# Runs its tests as handed out; told there is no more work, it starts a child that ignores
# SIGTERM (its pid written to `child.pid`) and waits for it, as Python joins a non-daemon
# multiprocessing worker at exit.
LINGERING_LANE = r"""
import json, os, socket, subprocess, sys
nodeids, linger = json.loads(sys.argv[1])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["TESTFLEET_QUEUE"])
reader = sock.makefile("rb")
def send(message):
    sock.sendall(json.dumps(message).encode() + b"\n")
send({"type": "hello", "lane": int(os.environ["TESTFLEET_LANE"]), "pid": os.getpid()})
send({"type": "collected", "nodeids": nodeids})
while True:
    send({"type": "next"})
    message = json.loads(reader.readline())
    if message["type"] != "unit":
        break
    for nodeid in message["nodeids"]:
        send({"type": "start", "nodeid": nodeid})
        send({"type": "result", "nodeid": nodeid, "outcome": "passed", "duration": 0.01})
if linger:
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    with open("child.pid", "w") as f:
        f.write(str(child.pid))
    child.wait()
"""

IDS = [f"t.py::test_{i}" for i in range(3)]


class Recorded:
    """Progress that takes every snapshot."""

    def __init__(self) -> None:
        self.seen: list[Snapshot] = []

    def update(self, snapshot: Callable[[], Snapshot]) -> None:
        self.seen.append(snapshot())

    def close(self) -> None:
        pass


def coordinator(
    tmp_path: Path, *, linger: bool, exit_grace: float, progress: Recorded, started: float
) -> Coordinator:
    socket_path = tmp_path / "q.sock"
    script = json.dumps([IDS, linger])
    launch = LaneLaunch(
        argv=lambda n: [sys.executable, "-c", LINGERING_LANE, script],
        env=lambda n: {"TESTFLEET_LANE": str(n), "TESTFLEET_QUEUE": str(socket_path)},
        log_path=lambda n: tmp_path / f"lane{n}.log",
        cwd=tmp_path,
    )
    return Coordinator(
        launch,
        1,
        socket_path,
        work=work_source({}, "test", keep_order=True, lanes=1),
        test_timeout=None,
        deadline=None,
        progress=progress,
        exit_grace=exit_grace,
        started=started,
    )


def test_a_lane_kept_alive_after_its_last_test_is_stopped_and_what_kept_it_is_named(
    tmp_path: Path,
):
    """A lane that does not exit within the bound after its last test is stopped with what
    kept it alive (named by pid and command line); every result stands, no test is blamed."""
    progress = Recorded()
    run = coordinator(
        tmp_path, linger=True, exit_grace=0.5, progress=progress, started=time.monotonic()
    )
    outcome: RunOutcome = run.run()
    assert {r.nodeid: r.outcome for r in outcome.results} == dict.fromkeys(IDS, "passed")
    child = int((tmp_path / "child.pid").read_text())
    [notice] = outcome.notices
    assert "lane 1 (pid " in notice
    assert "finished its tests but had not exited 0.5 s later" in notice
    assert f"pid {child}: {sys.executable} -c import signal" in notice
    assert not any(nodeid in notice for nodeid in IDS)
    assert outcome.fatal is None
    assert not outcome.timed_out
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    # While it waited, progress said so rather than "between tests".
    assert any(
        what.startswith("exiting after its last test") for s in progress.seen for _, what in s.lanes
    )


def test_a_lane_that_exits_by_itself_gets_no_notice(tmp_path: Path):
    """A lane that exits after its last test, as lanes do, is left alone."""
    run = coordinator(
        tmp_path, linger=False, exit_grace=0.5, progress=Recorded(), started=time.monotonic()
    )
    outcome = run.run()
    assert [r.outcome for r in outcome.results] == ["passed"] * len(IDS)
    assert outcome.notices == ()


def test_progress_counts_from_the_command_start(tmp_path: Path):
    """The progress line's seconds count from the command's start, as the summary's first
    result and total do, not from when the lanes began."""
    progress = Recorded()
    started = time.monotonic() - 100.0  # the command started 100 s before the lanes
    outcome = coordinator(
        tmp_path, linger=False, exit_grace=5.0, progress=progress, started=started
    ).run()
    assert progress.seen
    assert all(snapshot.elapsed >= 100.0 for snapshot in progress.seen)
    assert outcome.first_result_at is not None
    first = outcome.first_result_at - started
    last = progress.seen[-1]
    assert first <= last.elapsed <= time.monotonic() - started


def test_what_keeps_a_process_alive_is_its_group_and_its_descendants():
    """The processes named for a lingering lane: its descendants (also those that left its
    group) and the other members of its group, never the lane itself."""
    me = os.getpid()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        start_new_session=True,  # left the group: still found as a descendant
    )
    try:
        found = lingering.holders(me)
        assert child.pid in found
        assert me not in found
        assert (
            lingering.command_line(child.pid) == f"{sys.executable} -c import sys; sys.stdin.read()"
        )
    finally:
        child.communicate(b"")


def test_the_bound_comes_from_the_environment_when_it_is_a_positive_number():
    """TESTFLEET_LANE_EXIT_SECONDS sets the bound; anything else leaves the default."""
    assert lingering.exit_grace({lingering.GRACE_VARIABLE: "0.25"}) == 0.25
    for wrong in ("", "0", "-3", "soon", "nan"):
        assert lingering.exit_grace({lingering.GRACE_VARIABLE: wrong}) == (
            lingering.EXIT_GRACE_SECONDS
        )


def test_a_lane_that_stops_holds_nothing_more():
    """After pytest's -x in a lane, the tests it still held are no longer its (they are
    reported as not run), so the bound on its exit counts from its stop."""
    queue = LaneQueue(work_source({}, "test", keep_order=True, lanes=1), {1: ""})
    queue.collected(1, IDS)
    assert queue.take(1) is not None
    assert queue.holds(1)
    queue.stop("-x: 1 failed", 1)
    assert not queue.holds(1)
    assert queue.take(1) is None
