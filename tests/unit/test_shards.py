"""Shards and merge on plain data: what a shard records and what merge accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testfleet import shard_merge, shards
from testfleet.errors import ConfigError
from testfleet.lanes.outcome import GroupOutcome, RunOutcome
from testfleet.plan import estimate, make_units, shard_units
from testfleet.results import TestResult
from testfleet.verdict import Facts, verdict
from tests.helpers import project

IDS = [f"tests/test_{m}.py::test_{i}" for m in "abcd" for i in range(3)]


def outcome(selected: list[str], **problems: object) -> RunOutcome:
    results = tuple(TestResult(n, "passed", 0.1) for n in selected)
    group = GroupOutcome("", tuple(IDS), tuple(selected), results, {}, 0, 0.0)
    fields: dict[str, object] = {
        "timed_out": False,
        "interrupted": False,
        "stopping": None,
        "fatal": None,
        "fatal_details": "",
        "fatal_code": 0,
    }
    fields.update(problems)
    return RunOutcome((group,), (), notices=(), **fields)  # type: ignore[arg-type]


def split(count: int) -> list[list[str]]:
    units = make_units(IDS, estimate(IDS, {}), "module")
    return [[n for u in shard_units(units, i, count) for n in u.nodeids] for i in (1, 2)[:count]]


def write(root: Path, index: int, selected: list[str], **problems: object) -> Path:
    loaded = project(root, {})
    return shards.write_shard(
        loaded,
        (index, 2),
        outcome(selected, **problems),
        {"": "3.11.7"},
        measured={},
        keep_order=False,
        coverage_dir=None,
    )


def test_complete_shards_merge(tmp_path: Path):
    first, second = split(2)
    dirs = [write(tmp_path, 1, first), write(tmp_path, 2, second)]
    merged = shard_merge.merge_shards(project(tmp_path, {}), dirs, tmp_path)
    assert sorted(r.nodeid for r in merged.results) == sorted(IDS)
    assert merged.problems == []


def test_a_shard_cut_short_is_a_problem_for_merge(tmp_path: Path):
    """A shard whose service died wrote a complete-looking directory: merge must say so."""
    first, second = split(2)
    dirs = [
        write(tmp_path, 1, first),
        write(tmp_path, 2, second, fatal="service valkey (lane 1) exited unexpectedly"),
    ]
    merged = shard_merge.merge_shards(project(tmp_path, {}), dirs, tmp_path)
    assert merged.problems == ["shard 2-of-2: service valkey (lane 1) exited unexpectedly"]


def test_a_test_in_no_shard_is_refused(tmp_path: Path):
    first, second = split(2)
    dirs = [write(tmp_path, 1, first), write(tmp_path, 2, second[:-1])]
    with pytest.raises(ConfigError, match="was collected but is in no shard"):
        shard_merge.merge_shards(project(tmp_path, {}), dirs, tmp_path)


def test_an_empty_share_is_not_a_failure():
    """More shards than units: a shard with nothing to run passes (pytest's "no tests" is
    for a suite that collected nothing)."""
    share = outcome([])
    collected = any(group.collected for group in share.groups)
    assert verdict(Facts(share.results, {}, collected)).code == 0
    empty = RunOutcome(
        (GroupOutcome("", (), (), (), {}, 0, 0.0),), (), False, False, None, None, "", 0, ()
    )
    collected = any(group.collected for group in empty.groups)
    assert verdict(Facts(empty.results, {}, collected)).code == 5


def test_a_result_missing_from_a_complete_shard_is_refused(tmp_path: Path):
    """A shard that says it ran everything but lacks a result (a failure dropped from its
    results.json) does not merge: a missing result is not a passed test."""
    first, second = split(2)
    dirs = [write(tmp_path, 1, first), write(tmp_path, 2, second)]
    results = dirs[1] / "results.json"
    document = json.loads(results.read_text())
    dropped = document["results"].pop()
    results.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=f"has no result for {dropped['nodeid']}, which shard"):
        shard_merge.merge_shards(project(tmp_path, {}), dirs, tmp_path)


def test_a_shard_cut_short_has_its_missing_results_as_not_run(tmp_path: Path):
    """A shard that says why it stopped accounts for the results it lacks: merged as not run,
    with its reason, so every collected test is still in the merge exactly once."""
    first, second = split(2)
    dirs = [write(tmp_path, 1, first), write(tmp_path, 2, second, timed_out=True)]
    results = dirs[1] / "results.json"
    document = json.loads(results.read_text())
    document["results"] = []
    results.write_text(json.dumps(document))
    merged = shard_merge.merge_shards(project(tmp_path, {}), dirs, tmp_path)
    assert sorted(r.nodeid for r in merged.results) == sorted(IDS)
    unrun = [r for r in merged.results if r.outcome == "not run"]
    assert sorted(r.nodeid for r in unrun) == sorted(second)
    assert {(r.message, r.shard, r.timed) for r in unrun} == {
        ("not run: the run timed out", "2-of-2", False)
    }
