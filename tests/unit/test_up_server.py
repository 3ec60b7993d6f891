"""The pieces of the up's defences that need no up: the bounded line reader and message
checks, the lanes the services allow, and which processes a run may have the up stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testfleet.protocol import LineReader, LineTooLong, message, whole_number
from testfleet.rundir import process_start_ticks
from testfleet.up import lane_processes
from testfleet.up.server import LANE_NUMBERS, lane_limit
from tests.helpers import alive, project, wait_for


def test_a_bounded_reader_splits_messages_across_chunks():
    """Lines come whole whatever the chunks; a partial line is kept and known."""
    reader = LineReader(limit=100)
    assert reader.feed(b'{"type": "a"}\n{"ty') == [{"type": "a"}]
    assert reader.partial
    assert reader.feed(b'pe": "b"}\n') == [{"type": "b"}]
    assert not reader.partial


def test_a_line_past_the_limit_is_refused_before_its_end_and_not_kept():
    """A line without end raises as soon as it is past the limit; nothing of it stays."""
    reader = LineReader(limit=1000)
    reader.feed(b"x" * 600)
    with pytest.raises(LineTooLong, match="longer than 1000 bytes"):
        reader.feed(b"x" * 600)
    assert not reader.partial


def test_a_whole_line_past_the_limit_is_refused_too():
    reader = LineReader(limit=10)
    with pytest.raises(LineTooLong):
        reader.feed(json.dumps({"type": "x" * 20}).encode() + b"\n")


def test_an_unbounded_reader_keeps_long_lines():
    """Between a run and its lanes a result carries whatever a test printed: no limit."""
    line = json.dumps({"type": "result", "output": "x" * (3 << 20)}).encode() + b"\n"
    reader = LineReader()
    found = [m for i in range(0, len(line), 65536) for m in reader.feed(line[i : i + 65536])]
    assert found == [json.loads(line)]


@pytest.mark.parametrize("line", [b"1", b"[]", b'{"x": 1}', b'{"type": 3}', b"nonsense"])
def test_a_message_is_an_object_with_a_string_type(line: bytes):
    with pytest.raises(ValueError):  # noqa: PT011 - JSON's own errors are ValueErrors too
        message(line)


@pytest.mark.parametrize("value", [True, -1, 0.5, "3", None])
def test_a_whole_number_is_an_int_of_at_least_the_least(value: object):
    with pytest.raises(ValueError, match="not a whole number of at least 0"):
        whole_number(value, "a pid")


def test_the_lanes_the_services_allow(tmp_path: Path):
    """Valkey's 16 DB numbers, one lane for a fixed port, and no limit without services."""
    databases = {"services": {"valkey": {"isolation": "database"}}}
    assert lane_limit(project(tmp_path, databases).config) == 16
    fixed = {"services": {"valkey": {"port": 6400}}}
    assert lane_limit(project(tmp_path, fixed).config) == 1
    assert lane_limit(project(tmp_path, {}).config) == LANE_NUMBERS


@pytest.fixture
def lane() -> Iterator[subprocess.Popen[bytes]]:
    """A lane process of "the run" (this test): its child, leading a group of its own."""
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def _ticks(pid: int) -> int:
    ticks = process_start_ticks(pid)
    assert ticks is not None
    return ticks


def test_a_lane_of_the_run_is_believed(lane: subprocess.Popen[bytes]):
    assert lane_processes.refusal(lane.pid, _ticks(lane.pid), os.getpid()) is None


@pytest.mark.parametrize("pid", [0, 1, -1])
def test_pid_0_1_and_below_are_never_a_lane(pid: int):
    assert lane_processes.refusal(pid, 0, os.getpid()) == "it is no lane of the run"


def test_the_run_itself_the_up_and_others_processes_are_no_lanes(
    lane: subprocess.Popen[bytes],
):
    """Its own process, the up's, a process another started, one in its parent's group, a
    pid reused since (another start time), and a run that cannot be told: all refused."""
    me = os.getpid()
    assert lane_processes.refusal(me, _ticks(me), me) is not None
    parent = os.getppid()
    assert lane_processes.refusal(parent, _ticks(parent), me) is not None
    # Another's lane: this test's child, named by a run that is not this test.
    assert lane_processes.refusal(lane.pid, _ticks(lane.pid), parent) == (
        "the run did not start it"
    )
    assert lane_processes.refusal(lane.pid, _ticks(lane.pid) + 1, me) == (
        "its start time is not the one named"
    )
    assert lane_processes.refusal(lane.pid, _ticks(lane.pid), 0) is not None
    with subprocess.Popen(["sleep", "60"]) as grouped:  # in this test's process group
        try:
            assert lane_processes.refusal(grouped.pid, _ticks(grouped.pid), me) == (
                "it leads no process group of its own"
            )
        finally:
            grouped.kill()


def test_a_lane_that_ended_is_gone():
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert lane_processes.refusal(int(done.stdout), 1, os.getpid()) == "gone"


def test_stop_ends_a_lane_group_that_outlives_the_grace_and_nothing_reused(
    lane: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(lane_processes, "LANE_EXIT_SECONDS", 0.1)
    ticks = _ticks(lane.pid)
    lane_processes.stop(((lane.pid, ticks + 1),))  # another process now has that pid
    assert alive([(lane.pid, ticks)])
    lane_processes.stop(((lane.pid, ticks),))
    wait_for(lambda: lane.poll() is not None, what="the lane to end")
