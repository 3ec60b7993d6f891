"""The planner: scope grouping, estimates for unknown tests, slowest-first balance,
determinism."""

from __future__ import annotations

import random

import pytest

from testfleet.plan import (
    DEFAULT_ESTIMATE,
    assign,
    estimate,
    ideal_bound,
    make_units,
    plan,
    unit_key,
)

IDS = [
    "tests/test_a.py::test_one",
    "tests/test_a.py::TestX::test_two[1]",
    "tests/test_a.py::TestX::test_two[2]",
    "tests/test_b.py::test_three",
]


@pytest.mark.parametrize(
    ("group_by", "keys"),
    [
        ("module", ["tests/test_a.py"] * 3 + ["tests/test_b.py"]),
        (
            "class",
            [
                "tests/test_a.py",
                "tests/test_a.py::TestX",
                "tests/test_a.py::TestX",
                "tests/test_b.py",
            ],
        ),
        ("test", IDS),
    ],
)
def test_units_keep_fixture_scopes_together(group_by, keys):
    assert [unit_key(n, group_by) for n in IDS] == keys


def test_unknown_tests_get_the_median_of_known_ones():
    est = estimate(IDS, {IDS[0]: 1.0, IDS[1]: 3.0, IDS[2]: 2.0})
    assert (est.unknown, est.per_unknown) == (1, 2.0)
    assert est.durations[IDS[3]] == 2.0


def test_nothing_known_uses_the_default():
    est = estimate(IDS, {})
    assert est.unknown == 4
    assert set(est.durations.values()) == {DEFAULT_ESTIMATE}


def test_units_queue_slowest_first_ties_by_key():
    est = estimate(["b.py::t", "a.py::t", "c.py::t"], {"b.py::t": 1, "a.py::t": 1, "c.py::t": 5})
    assert [u.key for u in make_units(["b.py::t", "a.py::t", "c.py::t"], est, "module")] == [
        "c.py",
        "a.py",
        "b.py",
    ]


def test_unit_keeps_collection_order_inside():
    est = estimate(IDS, {})
    unit = make_units(IDS, est, "module")[0]
    assert unit.nodeids == tuple(IDS[:3])


def test_one_slow_test_gets_a_lane_to_itself():
    durations = {"slow.py::t": 10.0, **{f"m{i}.py::t": 1.0 for i in range(10)}}
    result = plan(list(durations), durations, 2, "module")
    loads = sorted(lane.estimate for lane in result.lanes)
    assert loads == [10.0, 10.0]
    assert result.makespan == ideal_bound(list(durations.values()), 2)


def test_balance_within_largest_unit_of_ideal():
    """Longest-processing-time-first stays within one unit of the ideal bound."""
    rng = random.Random(7)
    durations = {f"m{i}.py::t": rng.lognormvariate(0, 1) for i in range(200)}
    for lanes in (2, 4, 8):
        result = plan(list(durations), durations, lanes, "module")
        bound = ideal_bound(list(durations.values()), lanes)
        assert result.makespan <= bound + max(durations.values())
        assert result.makespan / bound < 1.05


def test_plan_is_deterministic_whatever_the_input_order():
    durations = {f"m{i % 7}.py::t{i}": float(i % 3) for i in range(50)}
    ids = list(durations)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    first = plan(ids, durations, 3, "module")
    again = plan(ids, durations, 3, "module")
    assert first == again
    keys = [[u.key for u in lane.units] for lane in first.lanes]
    assert keys == [
        [u.key for u in lane.units] for lane in plan(shuffled, durations, 3, "module").lanes
    ]


def test_more_lanes_than_units_leaves_lanes_empty():
    lanes = assign(make_units(IDS, estimate(IDS, {}), "module"), 4)
    assert [len(lane.units) for lane in lanes] == [1, 1, 0, 0]


def test_ideal_bound():
    assert ideal_bound([1, 1, 1, 1], 2) == 2
    assert ideal_bound([5, 1, 1], 4) == 5
    assert ideal_bound([], 3) == 0
