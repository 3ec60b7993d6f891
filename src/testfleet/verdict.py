"""The exit code of `run` and `merge`: one policy, a pure function of what happened (the
results, what stopped the run, the coverage and the reports), with the lines to say."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from testfleet.errors import ExitCode
from testfleet.reports.coverage import CoverageOutcome
from testfleet.results import TestResult


@dataclass(frozen=True)
class Facts:
    """What a run (or the merge of a CI run's shards) tells the exit code."""

    results: Sequence[TestResult]
    collect_errors: Mapping[str, str]
    collected: bool  # whether anything was collected (an empty shard was)
    coverage: CoverageOutcome | None = None
    report_problems: Sequence[str] = ()  # reports that could not be written
    # A fault that ended the run: (message, details, exit code), e.g. a service that died.
    fatal: tuple[str, str, int] | None = None
    timed_out: float | None = None  # the run's timeout, when it struck
    unfinished: Sequence[str] = ()  # shards that did not run all of their share, and why


@dataclass(frozen=True)
class Verdict:
    code: int
    # (message, details) lines to show as errors, in order.
    errors: list[tuple[str, str]] = field(default_factory=list)
    # A fault that is itself the outcome: raised as an error of its own exit code.
    fatal: tuple[str, str, int] | None = None


def verdict(facts: Facts) -> Verdict:
    reports = [(problem, "") for problem in facts.report_problems]
    if facts.fatal:
        return Verdict(ExitCode.SERVICE, reports, fatal=facts.fatal)
    outcome = _outcome(facts)
    errors = reports + outcome.errors
    code = outcome.code
    if facts.report_problems and code in (ExitCode.OK, ExitCode.TESTS_FAILED, ExitCode.NO_TESTS):
        # Every result is still in the results file; the reports are what is missing.
        code = ExitCode.SERVICE
    return Verdict(code, errors)


def _outcome(facts: Facts) -> Verdict:
    if facts.timed_out is not None:
        return Verdict(
            ExitCode.TESTS_FAILED,
            [
                (
                    f"the run timed out after {facts.timed_out:g} s and was stopped; raise"
                    " timeout (--timeout) or find the slow test (--test-timeout)",
                    "",
                )
            ],
        )
    errors = collection_error_lines(facts.collect_errors)
    errors += [
        (f"{problem}; its tests that did not run are reported as not run", "")
        for problem in facts.unfinished
    ]
    failed = any(r.failing for r in facts.results)
    unrun = [r for r in facts.results if r.outcome == "not run"]
    if unrun and not facts.unfinished and not failed:
        # Nothing else says why (a failure and -x, a shard cut short): say it.
        errors.append((f"{len(unrun)} test(s) did not run (e.g. {unrun[0].nodeid})", ""))
    if errors:
        return Verdict(ExitCode.TESTS_FAILED, errors)
    if not facts.results and not facts.collected:
        return Verdict(ExitCode.NO_TESTS, [("pytest collected no tests", "")])
    if failed:
        return Verdict(ExitCode.TESTS_FAILED)
    # Every selected test passed (or this CI shard's share was empty): coverage decides.
    return coverage_verdict(facts.coverage)


def collection_error_lines(errors: Mapping[str, str]) -> list[tuple[str, str]]:
    """A line per module that failed to collect, with the end of pytest's explanation."""
    return [
        (f"collecting {nodeid} failed", "\n".join(text.splitlines()[-15:]))
        for nodeid, text in errors.items()
    ]


def coverage_verdict(coverage: CoverageOutcome | None) -> Verdict:
    # A CI shard measured its share only: `testfleet merge` applies the threshold.
    if coverage is None or coverage.partial or coverage.fail_under is None:
        return Verdict(ExitCode.OK)
    if coverage.total is None and coverage.left_out:
        return Verdict(
            ExitCode.TESTS_FAILED,
            [
                (
                    f"none of the {len(coverage.left_out)} measured file(s) exists here (e.g."
                    f" {coverage.left_out[0]}), so coverage-fail-under cannot pass; report in"
                    " a checkout of the commit that was measured",
                    "",
                )
            ],
        )
    if coverage.total is None:
        return Verdict(
            ExitCode.TESTS_FAILED,
            [("no coverage data was recorded, so coverage-fail-under cannot pass", "")],
        )
    if coverage.below:
        return Verdict(
            ExitCode.TESTS_FAILED,
            [
                (
                    f"total coverage {coverage.total or 0:.2f}% is under coverage-fail-under"
                    f" {coverage.fail_under:g}%",
                    "",
                )
            ],
        )
    return Verdict(ExitCode.OK)
