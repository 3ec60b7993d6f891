"""CI shards: one machine's share of the suite written as an artifact directory, which
`testfleet merge` joins with every other machine's (shard_merge.py).

Each shard collects the whole suite and plans the same split from the same collection and
durations, so M machines cover every test exactly once. The artifact records what it
collected and what it ran, so merge can prove that: a missing shard, a test in no shard or in
two, a result that is not its shard's, or shards planned from different inputs are errors
that name what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from testfleet import __version__, durations
from testfleet.files import write_atomic
from testfleet.lanes.outcome import RunOutcome
from testfleet.project import Project
from testfleet.reports import coverage as coverage_report
from testfleet.reports.junit import write_junit
from testfleet.reports.results_file import write_results

FORMAT = "testfleet-shard"
FORMAT_VERSION = 1
MANIFEST = "shard.json"
SHARDS_DIR = Path(".testfleet") / "shards"


def shard_name(shard: tuple[int, int]) -> str:
    return f"{shard[0]}-of-{shard[1]}"


def coverage_file(folder: Path) -> Path:
    """A shard's coverage data: every lane's and every measured server's, combined. Not a
    dot-file: CI artifact uploads leave hidden files out by default (upload-artifact v4)."""
    return folder / "coverage" / f"{folder.name}.coverage"


def shard_dir(project: Project, shard: tuple[int, int], labels: Sequence[str] = ()) -> Path:
    """`.testfleet/shards/2-of-4`, or with a matrix `2-of-4-py3.12`: CI gathers every job's
    directory into one place, and jobs of different versions must not write the same one."""
    suffix = "-py" + "+".join(labels) if any(labels) else ""
    return project.root / SHARDS_DIR / f"{shard_name(shard)}{suffix}"


def label(outcome: RunOutcome, shard: tuple[int, int]) -> RunOutcome:
    """The outcome with every result marked as this shard's."""
    name = shard_name(shard)
    groups = tuple(
        dataclasses.replace(
            group, results=tuple(dataclasses.replace(r, shard=name) for r in group.results)
        )
        for group in outcome.groups
    )
    return dataclasses.replace(outcome, groups=groups)


def unfinished(outcome: RunOutcome) -> list[str]:
    """Why a shard did not run all of its share, if it did not: merge must not call a run
    green that a dead service or a timeout cut short."""
    problems = []
    if outcome.fatal:
        problems.append(outcome.fatal)
    if outcome.timed_out:
        problems.append("the run timed out")
    if outcome.interrupted:
        problems.append("the run was interrupted")
    if outcome.stopping:
        problems.append(f"stopped early: {outcome.stopping}")
    for group in outcome.groups:
        if group.collected is None and not group.collect_errors:
            where = f"python {group.label}" if group.label else "the suite"
            problems.append(f"{where} was never collected (its lanes failed first)")
    return problems


def fingerprint(project: Project, measured: Mapping[str, float], *, keep_order: bool) -> str:
    """What the split depends on: shards planned from different inputs cannot be merged."""
    config = project.config
    basis = {
        "testfleet": __version__,
        "pytest-args": list(config.pytest_args),
        "group-by": config.group_by,
        "keep-order": keep_order,
        "durations": sorted(measured.items()),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _write_json(path: Path, data: object) -> None:
    # allow_nan=False: merge refuses NaN and Infinity, so a shard must never write them.
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False)
    write_atomic(path, (text + "\n").encode("utf-8"))


def write_shard(
    project: Project,
    shard: tuple[int, int],
    outcome: RunOutcome,
    versions: Mapping[str, str],
    *,
    measured: Mapping[str, float],
    keep_order: bool,
    coverage_dir: Path | None,
) -> Path:
    """`.testfleet/shards/I-of-M/`: results, JUnit, coverage data, durations, and last the
    manifest, so a directory without one is known to be incomplete."""
    folder = shard_dir(project, shard, [g.label for g in outcome.groups])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    results = outcome.results
    write_results(
        folder / "results.json",
        results,
        python=",".join(versions.values()),
        collect_errors=outcome.collect_errors,
    )
    write_junit(folder / "junit.xml", results, versions=versions)
    # Only what merge accepts (durations.unusable): an absurd time would fail the whole merge.
    ran = {
        r.nodeid: round(r.duration, 4) for r in results if r.timed and durations.usable(r.duration)
    }
    _write_json(folder / "durations.json", {"version": 1, "durations": ran})
    if coverage_dir is not None:
        # One data file, the paths as measured in this checkout: merge maps them to its own.
        coverage_report.gather(project, coverage_dir, coverage_file(folder))
    _write_json(
        folder / MANIFEST,
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "shard": shard[0],
            "shards": shard[1],
            "fingerprint": fingerprint(project, measured, keep_order=keep_order),
            "problems": unfinished(outcome),
            "coverage": coverage_dir is not None,
            "root": str(project.root),
            "groups": {
                group.label: {
                    "python": versions.get(group.label, group.label),
                    "collected": list(group.collected or ()),
                    "selected": list(group.selected),
                }
                for group in outcome.groups
            },
        },
    )
    return folder
