"""The lane queue alone: hand-out, give-back, the restart cap and the stop, without a process."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from testfleet.lanes.queue import LaneQueue, Mismatch
from testfleet.plan import Unit, Work, work_source

IDS = ["a.py::t1", "a.py::t2", "b.py::t1", "c.py::t1"]


def by_module(label: str, nodeids: Sequence[str]) -> Work:
    return work_source({}, "module", keep_order=True, lanes=2)(label, nodeids)


def queue(lanes: int = 2, **groups: str) -> LaneQueue:
    group_of = {n: groups.get(f"lane{n}", "") for n in range(1, lanes + 1)}
    return LaneQueue(by_module, group_of, max_restarts=2)


def keys(units: Sequence[Unit | None]) -> list[str | None]:
    return [u.key if u else None for u in units]


def test_nothing_is_handed_out_before_the_group_is_collected():
    """A lane that asks before any lane of its group collected gets nothing."""
    assert queue().take(1) is None


def test_the_first_collection_plans_the_group_and_units_go_out_once_each():
    """Units are handed out in queue order across lanes, each exactly once, then None."""
    q = queue()
    work = q.collected(1, IDS)
    assert work is not None
    assert work.selected == tuple(IDS)
    assert q.collected(2, list(reversed(IDS))) is None  # same tests, other order: fine
    assert keys([q.take(1), q.take(2), q.take(1), q.take(2)]) == ["a.py", "b.py", "c.py", None]


def test_a_lane_that_collected_other_tests_is_a_mismatch():
    """Collection must not depend on the lane: a different set is refused, with an example."""
    q = queue()
    q.collected(1, IDS)
    with pytest.raises(Mismatch, match=r"lane 2 collected 3 tests where another lane collected 4"):
        q.collected(2, IDS[:3])


def test_what_a_lane_held_goes_back_first_in_line():
    """A lane that ended with tests unfinished: those go to the front of its group's queue,
    without the ones that have results."""
    q = queue()
    q.collected(1, IDS)
    unit = q.take(1)
    assert unit is not None
    assert unit.nodeids == ("a.py::t1", "a.py::t2")
    q.finished(1, "a.py::t1")
    q.give_back(1)
    q.give_back(1)  # nothing held any more: nothing goes back twice
    again = q.take(2)
    assert again is not None
    assert again.nodeids == ("a.py::t2",)
    assert again.key == "requeued from lane 1"
    assert keys([q.take(2)]) == ["b.py"]


def test_a_lane_is_replaced_only_while_work_is_left_and_at_most_the_cap():
    """Replacements are counted per lane and stop at the cap; none when the queue is empty."""
    q = queue()
    q.collected(1, IDS)
    assert [q.replace(1), q.replace(1), q.replace(1)] == [True, True, False]
    assert q.restarts == {1: 2, 2: 0}
    while q.take(2) is not None:
        pass
    assert q.replace(2) is False


def test_a_stop_hands_out_nothing_more():
    """After -x in some lane no lane gets more work, and no lane is replaced."""
    q = queue()
    q.collected(1, IDS)
    q.stop("Interrupted: stopping after 1 failures")
    assert q.take(1) is None
    assert q.replace(1) is False
    assert q.stopping == "Interrupted: stopping after 1 failures"


def test_a_halt_stops_handing_out_without_a_reason():
    """A fault or the run's timeout ends the hand-out; `stopping` stays for -x only."""
    q = queue()
    q.collected(1, IDS)
    q.halt()
    assert q.take(1) is None
    assert q.stopping is None


def test_groups_have_queues_of_their_own():
    """Lanes of one Python version never get another version's units."""
    q = queue(lanes=2, lane1="3.11", lane2="3.12")
    q.collected(1, IDS)
    assert q.take(2) is None  # 3.12 has collected nothing yet
    q.collected(2, IDS[:1])  # another group may collect other tests
    assert keys([q.take(2), q.take(2)]) == ["a.py", None]
    assert keys([q.take(1)]) == ["a.py"]
