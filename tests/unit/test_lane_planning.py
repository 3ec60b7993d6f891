"""What a run plans before anything starts: the order a CI shard's share runs in with one lane,
and how many lanes a selection can keep busy; and the summary that shows every lane."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from testfleet import run_plan
from testfleet.lanes.count import lanes_for_units
from testfleet.lanes.outcome import LaneFacts
from testfleet.plan import Work
from testfleet.reports.summary import RunFacts, print_summary
from testfleet.results import TestResult
from testfleet.venvs import PythonTarget
from tests.helpers import project

# Measured so that the slowest-first split gives shard 2 of 2 modules d, c and b, in that
# order, while pytest collects them b, c, d.
MEASURED = {"tests/test_a.py::t": 10.0, "tests/test_b.py::t": 1.0}
MEASURED |= {"tests/test_c.py::t": 2.0, "tests/test_d.py::t": 3.0}
IDS = sorted(MEASURED)


def planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **table: object) -> run_plan.RunPlan:
    """The run's plan, the project's own interpreter standing in for its venvs."""
    folder = tmp_path / ".testfleet"
    folder.mkdir(parents=True)
    (folder / "durations.json").write_text(json.dumps({"version": 1, "durations": MEASURED}))
    target = PythonTarget("", "python", "3.11.7", None, reused=True)
    monkeypatch.setattr(run_plan, "prepare_targets", lambda *a, **k: [target])
    return run_plan.plan_run(project(tmp_path, table), int(str(table.get("lanes", 1))))


def modules(work: Work) -> list[str]:
    return [unit.key for unit in work.units]


def test_one_lane_runs_a_shards_share_in_pytests_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`--shard 2/2` with one lane runs its modules in collection order (an order-dependent
    suite behaves as under `-n 1`), and says nothing about a changed order."""
    plan = planned(tmp_path, monkeypatch, shard="2/2", lanes=1)
    work = plan.work("", IDS)
    assert modules(work) == ["tests/test_b.py", "tests/test_c.py", "tests/test_d.py"]
    assert work.notice is None


def test_a_shards_split_does_not_depend_on_its_lanes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Machines with one lane and with four plan the same split (and the same fingerprint
    input), so every test is in exactly one shard; only the order within a shard differs."""
    one = planned(tmp_path / "one", monkeypatch, shard="2/2", lanes=1)
    four = planned(tmp_path / "four", monkeypatch, shard="2/2", lanes=4)
    assert sorted(modules(one.work("", IDS))) == sorted(modules(four.work("", IDS)))
    assert modules(four.work("", IDS)) == ["tests/test_d.py", "tests/test_c.py", "tests/test_b.py"]
    assert one.keep_order == four.keep_order


def write_suite(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("def test_x(): pass\n")


def test_lanes_are_capped_at_the_modules_a_selection_of_files_names(tmp_path: Path):
    """Files and node ids name at most one unit a file (group-by module): no more lanes."""
    write_suite(tmp_path, "tests/test_a.py", "tests/test_b.py")
    config = project(tmp_path, {"lanes": 4})
    assert lanes_for_units(config, 4, ["tests/test_a.py"]) == 1
    assert lanes_for_units(config, 4, ["tests/test_a.py::test_x", "tests/test_a.py"]) == 1
    assert lanes_for_units(config, 4, [str(tmp_path / "tests/test_a.py"), "tests/test_b.py"]) == 2
    assert lanes_for_units(config, 1, ["tests/test_a.py"]) == 1


def test_lanes_stay_where_the_selection_does_not_bound_the_units(tmp_path: Path):
    """A directory, no selection, another grouping, a missing file, or another path among
    pytest's arguments: the lanes asked for."""
    write_suite(tmp_path, "tests/test_a.py", "tests/test_b.py")
    config = project(tmp_path, {"lanes": 4})
    assert lanes_for_units(config, 4, ["tests"]) == 4
    assert lanes_for_units(config, 4, []) == 4
    assert lanes_for_units(config, 4, ["tests/test_missing.py"]) == 4
    by_test = project(tmp_path, {"lanes": 4, "group-by": "test"})
    assert lanes_for_units(by_test, 4, ["tests/test_a.py"]) == 4
    more = project(tmp_path, {"lanes": 4, "pytest-args": ["tests/test_b.py", "tests/test_a.py"]})
    assert lanes_for_units(more, 4, ["tests/test_a.py"]) == 4


def test_the_summary_shows_every_lane_that_ran_also_an_idle_one():
    """A lane that ran no test is listed too: it cost its start-up."""
    out = io.StringIO()
    lanes = [
        LaneFacts(1, "", busy=0.5, wall=2.0, startup=1.0, tests=3, restarts=0),
        LaneFacts(2, "", busy=0.0, wall=1.5, startup=1.2, tests=0, restarts=0),
    ]
    results = [TestResult(f"t.py::test_{i}", "passed", duration=0.2, lane=1) for i in range(3)]
    print_summary(
        Console(file=out, width=200),
        results,
        RunFacts(wall=2.0, total=3.0, lanes=lanes, unknown_durations=0, per_unknown=0.0),
    )
    text = out.getvalue()
    assert "lane 1: 3 tests" in text
    assert "lane 2: 0 tests, busy 0.00 s of 1.50 s (start-up and collection 1.20 s)" in text
