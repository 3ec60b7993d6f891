"""The exit code of a run, a pure function of what happened: its outcome and its coverage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from testfleet.coordinator import RunOutcome
from testfleet.errors import EXIT_NO_TESTS, EXIT_OK, EXIT_TESTS_FAILED
from testfleet.reports.coverage import CoverageOutcome


@dataclass(frozen=True)
class Verdict:
    code: int
    # (message, details) lines to show as errors, in order.
    errors: list[tuple[str, str]] = field(default_factory=list)
    # A fatal problem (a lane could not collect, a service died): an error of its own code.
    fatal: tuple[str, str, int] | None = None


def verdict(
    outcome: RunOutcome, coverage: CoverageOutcome | None, *, timeout: float | None
) -> Verdict:
    if outcome.fatal:
        return Verdict(0, fatal=(outcome.fatal, outcome.fatal_details, outcome.fatal_code))
    if outcome.timed_out:
        return Verdict(
            EXIT_TESTS_FAILED,
            [
                (
                    f"the run timed out after {timeout or 0:g} s and was stopped; raise timeout"
                    " (--timeout) or find the slow test (--test-timeout)",
                    "",
                )
            ],
        )
    errors = outcome.collect_errors
    if errors:
        return Verdict(EXIT_TESTS_FAILED, collection_error_lines(errors))
    results = outcome.results
    if not results and any(group.collected for group in outcome.groups):
        # The suite was collected, and this CI shard's share of it is empty (more shards than
        # units): nothing failed.
        return coverage_verdict(coverage)
    if not results:
        return Verdict(EXIT_NO_TESTS, [("pytest collected no tests", "")])
    if any(r.failing for r in results):
        return Verdict(EXIT_TESTS_FAILED)
    return coverage_verdict(coverage)


def collection_error_lines(errors: Mapping[str, str]) -> list[tuple[str, str]]:
    """A line per module that failed to collect, with the end of pytest's explanation."""
    return [
        (f"collecting {nodeid} failed", "\n".join(text.splitlines()[-15:]))
        for nodeid, text in errors.items()
    ]


def coverage_verdict(coverage: CoverageOutcome | None) -> Verdict:
    if coverage is not None and coverage.total is None and coverage.fail_under is not None:
        return Verdict(
            EXIT_TESTS_FAILED,
            [("no coverage data was recorded, so coverage-fail-under cannot pass", "")],
        )
    if coverage is not None and coverage.below:
        return Verdict(
            EXIT_TESTS_FAILED,
            [
                (
                    f"total coverage {coverage.total or 0:.2f}% is under coverage-fail-under"
                    f" {coverage.fail_under:g}%",
                    "",
                )
            ],
        )
    return Verdict(EXIT_OK)
