"""`testfleet merge`: join the shard directories of a CI run. One JUnit with every collected
test exactly once, combined coverage, merged durations, the summary (and the CI page's), and
the exit code of the whole, by the same policy as a run's (verdict.py)."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from rich.console import Console

from testfleet import shards
from testfleet.commands import Call
from testfleet.commands.common import project_for
from testfleet.console import error, say
from testfleet.options import MERGE, add_options
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
    found = shards.find_shard_dirs(project, call.args.dirs)
    with tempfile.TemporaryDirectory(prefix="testfleet-merge-") as pieces:
        merged = shards.merge_shards(project, found, Path(pieces))
        problems = write_reports(
            project,
            merged.results,
            collection_errors(merged.collect_errors),
            merged.versions,
            measured=shards.merged_durations(found),
            lastfailed=False,
        )
        cov = coverage_report.combine(project, Path(pieces)) if merged.coverage_pieces else None
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
        step_summary.append(Path(page), step_summary.markdown(merged.results, merged.versions, cov))
    say(
        f"merged {len(found)} shard director{'y' if len(found) == 1 else 'ies'}"
        f" ({merged.shards} shard(s)): JUnit XML: {project.path(project.config.junit_xml)}"
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
