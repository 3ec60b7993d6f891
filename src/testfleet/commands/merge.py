"""`testfleet merge`: join the shard directories of a CI run. One JUnit with every collected
test exactly once, every shard's coverage combined (and coverage-fail-under applied to it),
merged durations, the summary (and the CI page's), and the exit code of the whole, by the
same policy as a run's (verdict.py)."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from rich.console import Console

from testfleet import durations, shard_merge
from testfleet.commands import Call
from testfleet.commands.common import project_for
from testfleet.console import error, say
from testfleet.options import MERGE, add_options
from testfleet.project import Project
from testfleet.reports import coverage as coverage_report
from testfleet.reports import step_summary
from testfleet.reports.summary import RunFacts, print_summary
from testfleet.reports.write import collection_errors, write_reports
from testfleet.verdict import Facts, verdict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Default: every directory under .testfleet/shards/."
    add_options(parser, MERGE)
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="shard directories")


def main(call: Call) -> int:
    project = project_for(call, MERGE)
    # The durations file the merged times go into, read (and refused when it is not one)
    # before anything is written, as `run` reads it before it plans.
    durations.load(project.path(project.config.durations), project.root)
    found = shard_merge.find_shard_dirs(project, call.args.dirs)
    with tempfile.TemporaryDirectory(prefix="testfleet-merge-") as pieces:
        merged = shard_merge.merge_shards(project, found, Path(pieces))
        problems = write_reports(
            project,
            merged.results,
            collection_errors(merged.collect_errors),
            merged.versions,
            measured=merged.durations,
            lastfailed=False,
        )
        cov = merged_coverage(project, merged, Path(pieces))
    print_summary(
        Console(stderr=True, soft_wrap=True),
        merged.results,
        RunFacts(
            wall=0.0,
            total=0.0,
            lanes=(),
            unknown_durations=0,
            per_unknown=0.0,
            coverage=cov,
            versions={k: v for k, v in merged.versions.items() if k},
        ),
    )
    page = os.environ.get("GITHUB_STEP_SUMMARY")
    if page:
        step_summary.append(
            Path(page),
            step_summary.markdown(
                merged.results,
                merged.versions,
                cov,
                title=f"testfleet merge: {merged.shards} shard(s)",
            ),
        )
    where = f"JUnit XML: {project.path(project.config.junit_xml)}"
    if cov is not None and cov.total is not None and cov.xml is not None:
        where += f"; coverage XML: {cov.xml}"
    say(
        f"merged {len(found)} shard director{'y' if len(found) == 1 else 'ies'}"
        f" ({merged.shards} shard(s)): {where}"
    )
    result = verdict(
        Facts(
            results=merged.results,
            collect_errors=merged.collect_errors,
            collected=True,
            coverage=cov,
            report_problems=problems,
            unfinished=merged.problems,
        )
    )
    for message, details in result.errors:
        error(message, details)
    return result.code


def merged_coverage(
    project: Project, merged: shard_merge.Merged, pieces: Path
) -> coverage_report.CoverageOutcome | None:
    """Every shard's coverage combined, with files measured in the shards' checkouts named as
    in this one, and the threshold applied to the whole; None when the shards measured none
    and no coverage-fail-under asks for it (then that is a failure: nothing was measured)."""
    if not merged.coverage and project.config.coverage_fail_under is None:
        return None
    return coverage_report.combine(project, pieces, roots=merged.roots)
