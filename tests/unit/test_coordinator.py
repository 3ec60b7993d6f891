"""The coordinator with fake lanes: small processes that speak the lane protocol and behave as
told (crash on a test, collect something else, stop early), so the scheduling rules are
pinned down without pytest or services."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from testfleet.lanes.coordinator import Coordinator
from testfleet.lanes.outcome import RunOutcome
from testfleet.lanes.progress import Snapshot
from testfleet.lanes.spawn import LaneLaunch
from testfleet.plan import Work, work_source

FAKE_LANE = r"""
import json, os, signal, socket, sys
script = json.loads(sys.argv[1])
lane = int(os.environ["TESTFLEET_LANE"])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["TESTFLEET_QUEUE"])
buffer = b""
def send(message):
    sock.sendall(json.dumps(message).encode() + b"\n")
def receive():
    global buffer
    while b"\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            sys.exit(0)
        buffer += data
    line, buffer = buffer.split(b"\n", 1)
    return json.loads(line)
send({"type": "hello", "lane": lane, "pid": os.getpid()})
collected = script["collect"].get(str(lane)) or script["collect"]["*"]
send({"type": "collected", "nodeids": collected})
while True:
    send({"type": "next"})
    message = receive()
    if message["type"] != "unit":
        break
    for nodeid in message["nodeids"]:
        send({"type": "start", "nodeid": nodeid})
        behaviour = script["tests"].get(nodeid, "passed")
        if behaviour == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        outcome = "failed" if behaviour == "stop" else behaviour
        send({"type": "result", "nodeid": nodeid, "outcome": outcome, "duration": 0.01})
        if behaviour == "stop":
            send({"type": "stopping", "reason": "-x: 1 failed"})
            sys.exit(1)
sock.close()
"""


class NoProgress:
    def update(self, snapshot: Callable[[], Snapshot]) -> None:
        pass

    def close(self) -> None:
        pass


def run_fake(
    tmp_path: Path,
    *,
    lanes: int,
    collect: Mapping[str, Sequence[str]],
    tests: Mapping[str, str] | None = None,
    groups: Mapping[int, str] | None = None,
    work: object = None,
    max_restarts: int = 3,
) -> RunOutcome:
    script = json.dumps({"collect": collect, "tests": tests or {}})
    socket_path = tmp_path / "q.sock"
    launch = LaneLaunch(
        argv=lambda n: [sys.executable, "-c", FAKE_LANE, script],
        env=lambda n: {"TESTFLEET_LANE": str(n), "TESTFLEET_QUEUE": str(socket_path)},
        log_path=lambda n: tmp_path / f"lane{n}.log",
        cwd=tmp_path,
        group=(lambda n: groups[n]) if groups else (lambda n: ""),
    )
    source = work or work_source({}, "test", keep_order=True, lanes=lanes)
    coordinator = Coordinator(
        launch,
        lanes,
        socket_path,
        work=source,  # type: ignore[arg-type]
        test_timeout=None,
        deadline=None,
        progress=NoProgress(),
        max_restarts=max_restarts,
    )
    return coordinator.run()


IDS = [f"t.py::test_{i}" for i in range(6)]


def outcomes(outcome: RunOutcome) -> dict[str, str]:
    return {r.nodeid: r.outcome for r in outcome.results}


def test_every_collected_test_runs_once_across_lanes(tmp_path: Path):
    outcome = run_fake(tmp_path, lanes=3, collect={"*": IDS})
    assert outcomes(outcome) == dict.fromkeys(IDS, "passed")
    assert sum(lane.tests for lane in outcome.lanes) == len(IDS)


def test_crash_is_an_error_and_the_rest_is_drained_to_a_replacement(tmp_path: Path):
    outcome = run_fake(tmp_path, lanes=1, collect={"*": IDS}, tests={IDS[1]: "crash"})
    result = {r.nodeid: r for r in outcome.results}
    assert result[IDS[1]].outcome == "error"
    assert "crashed (killed by SIGKILL)" in result[IDS[1]].message
    assert all(result[n].outcome == "passed" for n in IDS if n != IDS[1])
    assert outcome.lanes[0].restarts == 1


def test_restart_cap_leaves_the_rest_not_run(tmp_path: Path):
    crashing = dict.fromkeys(IDS, "crash")
    outcome = run_fake(tmp_path, lanes=1, collect={"*": IDS}, tests=crashing, max_restarts=2)
    counts = [r.outcome for r in outcome.results]
    assert counts.count("error") == 3  # the lane and its two replacements
    assert counts.count("not run") == 3
    assert outcome.lanes[0].restarts == 2


def test_lanes_that_collect_differently_stop_the_run(tmp_path: Path):
    outcome = run_fake(tmp_path, lanes=2, collect={"*": IDS, "2": IDS[:-1]})
    assert outcome.fatal is not None
    # Which lane reports first is up to the scheduler: either order names both counts.
    counts = re.search(r"collected (\d) tests where another lane collected (\d)", outcome.fatal)
    assert counts is not None
    assert sorted(counts.groups()) == ["5", "6"]
    assert "t.py::test_5" in outcome.fatal
    assert outcome.fatal_code == 3


def test_stop_after_first_failure_hands_out_no_more(tmp_path: Path):
    outcome = run_fake(tmp_path, lanes=1, collect={"*": IDS}, tests={IDS[0]: "stop"})
    assert outcome.stopping == "-x: 1 failed"
    assert outcomes(outcome)[IDS[0]] == "failed"
    assert all(r.message.startswith("not run: stopped early") for r in outcome.results[1:])


def test_groups_have_their_own_collection_and_queue(tmp_path: Path):
    """Two Python versions side by side: each is planned on its own collection (a test
    skipped at collection on one version is simply absent there)."""
    outcome = run_fake(
        tmp_path,
        lanes=4,
        collect={"1": IDS, "2": IDS, "3": IDS[:4], "4": IDS[:4]},
        groups={1: "3.11", 2: "3.11", 3: "3.12", 4: "3.12"},
    )
    by_group = {g.label: g for g in outcome.groups}
    assert [r.nodeid for r in by_group["3.11"].results] == IDS
    assert [r.nodeid for r in by_group["3.12"].results] == IDS[:4]
    assert {r.python for r in by_group["3.12"].results} == {"3.12"}
    for lane in outcome.lanes:
        assert lane.group == ("3.11" if lane.lane <= 2 else "3.12")


@pytest.mark.parametrize("shards", [2, 3])
def test_shards_split_the_collection_exactly_once(tmp_path: Path, shards: int):
    """The same work source on M machines: together they run each test exactly once."""
    measured = {nodeid: 0.1 * (i + 1) for i, nodeid in enumerate(IDS)}
    seen: list[str] = []
    for index in range(1, shards + 1):
        folder = tmp_path / str(index)
        folder.mkdir()
        source = work_source(measured, "test", keep_order=False, lanes=2, shard=(index, shards))
        outcome = run_fake(folder, lanes=2, collect={"*": IDS}, work=source)
        assert outcome.groups[0].collected == tuple(IDS)
        seen += [r.nodeid for r in outcome.results]
        assert all(r.outcome == "passed" for r in outcome.results)
    assert sorted(seen) == sorted(IDS)


def test_work_source_names_the_order_change_once():
    measured = {nodeid: 0.1 * (i + 1) for i, nodeid in enumerate(IDS)}
    source = work_source(measured, "test", keep_order=False, lanes=2)
    work: Work = source("", IDS)
    assert work.units[0].nodeids == ("t.py::test_5",)
    assert work.notice is not None
    assert "pytest's order" in work.notice
    kept = work_source(measured, "test", keep_order=True, lanes=1)("", IDS)
    assert kept.selected == tuple(IDS)
    assert kept.notice is None
