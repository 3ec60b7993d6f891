"""The queue hands a lane units of the files it has imported first, unless that costs
balance: lanes share one collection, each importing only its share of the suite."""

from __future__ import annotations

from collections import deque

from testfleet.lanes.affinity import Imported
from testfleet.plan import Unit


def idle(lane: int) -> float | None:
    """Every other lane is alive and between tests."""
    return 0.0


def gone(lane: int) -> float | None:
    return None


def unit(key: str, estimate: float, tests: int = 2) -> Unit:
    return Unit(key, tuple(f"{key}::test_{i}" for i in range(tests)), estimate)


def test_a_unit_of_an_imported_file_goes_first_when_estimates_barely_differ():
    """An equal unit of a file the lane imported comes before one it would import again."""
    imported = Imported()
    imported.add(1, ["tests/test_b.py"], {"tests/test_a.py": 0.3, "tests/test_b.py": 0.3})
    units = deque([unit("tests/test_a.py", 1.0), unit("tests/test_b.py", 0.8)])
    imported.bring_forward(units, 1, idle)
    assert [u.key for u in units] == ["tests/test_b.py", "tests/test_a.py"]


def test_a_much_slower_unit_keeps_its_place():
    """Balance first: a unit slower by more than its import still goes out slowest first."""
    imported = Imported()
    imported.add(1, ["tests/test_b.py"], {"tests/test_a.py": 0.3})
    units = deque([unit("tests/test_a.py", 10.0), unit("tests/test_b.py", 1.0)])
    imported.bring_forward(units, 1, idle)
    assert [u.key for u in units] == ["tests/test_a.py", "tests/test_b.py"]


def test_requeued_work_and_a_lane_with_nothing_imported_take_the_head():
    """What a dead lane held is already late; a fresh process has imported nothing."""
    imported = Imported()
    imported.add(1, ["tests/test_b.py"], {})
    requeued = Unit("requeued from lane 2", ("tests/test_a.py::test_0",), 0.0)
    units = deque([requeued, unit("tests/test_b.py", 1.0)])
    imported.bring_forward(units, 1, idle)
    assert units[0] is requeued
    imported.forget(1)
    units = deque([unit("tests/test_a.py", 1.0), unit("tests/test_b.py", 1.0)])
    imported.bring_forward(units, 1, idle)
    assert units[0].key == "tests/test_a.py"


def test_a_handed_unit_counts_as_imported():
    """Once a lane ran a unit of a file, the file's other units (classes) are its own too."""
    imported = Imported()
    imported.add(1, ["tests/test_x.py"], {})
    imported.handed(1, Unit("tests/test_b.py::A", ("tests/test_b.py::A::test_0",), 1.0))
    units = deque(
        [unit("tests/test_a.py", 1.0), Unit("tests/test_b.py::B", ("tests/test_b.py::B::t",), 1.0)]
    )
    imported.bring_forward(units, 1, idle)
    assert units[0].key == "tests/test_b.py::B"


def test_a_lane_waits_for_a_fast_unit_its_owner_takes_sooner():
    """A unit shorter than its import here is left to the lane that imported its file while
    that lane is between tests; once that lane is gone or long in a test, it is taken."""
    imported = Imported()
    imported.add(1, ["tests/test_a.py"], {"tests/test_b.py": 0.3})
    imported.add(2, ["tests/test_b.py"], {})
    units = deque([unit("tests/test_b.py", 0.01)])
    assert imported.bring_forward(units, 1, idle) is False
    assert imported.bring_forward(units, 1, gone) is True
    assert imported.bring_forward(units, 1, lambda lane: 5.0) is True
    # Slower than its import: worth taking whoever has the file.
    assert imported.bring_forward(deque([unit("tests/test_b.py", 1.0)]), 1, idle) is True
