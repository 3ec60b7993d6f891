"""The one exit policy of `run` and `merge`, case by case, from plain facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from testfleet.errors import ExitCode
from testfleet.reports.coverage import CoverageOutcome
from testfleet.results import Outcome, TestResult
from testfleet.verdict import Facts, verdict


def results(*outcomes: Outcome) -> list[TestResult]:
    return [TestResult(f"t.py::test_{i}", outcome) for i, outcome in enumerate(outcomes)]


def coverage(total: float | None, fail_under: float | None) -> CoverageOutcome:
    return CoverageOutcome(total, "", Path("c.xml"), Path(".coverage"), fail_under)


PASSED = results("passed", "skipped")
FAILED = results("passed", "failed")


@pytest.mark.parametrize(
    ("facts", "code"),
    [
        (Facts(PASSED, {}, True), ExitCode.OK),
        (Facts(FAILED, {}, True), ExitCode.TESTS_FAILED),
        (Facts(results("error"), {}, True), ExitCode.TESTS_FAILED),
        (Facts([], {}, False), ExitCode.NO_TESTS),
        # A CI shard whose share is empty: nothing failed.
        (Facts([], {}, True), ExitCode.OK),
        (Facts(PASSED, {"t.py": "ImportError"}, True), ExitCode.TESTS_FAILED),
        (Facts(PASSED, {}, True, timed_out=5.0), ExitCode.TESTS_FAILED),
        (Facts(results("passed", "not run"), {}, True), ExitCode.TESTS_FAILED),
        (Facts(PASSED, {}, True, unfinished=["shard 2-of-2: the run timed out"]), 1),
        (Facts(PASSED, {}, True, coverage=coverage(80.0, 90.0)), ExitCode.TESTS_FAILED),
        (Facts(PASSED, {}, True, coverage=coverage(95.0, 90.0)), ExitCode.OK),
        (Facts(PASSED, {}, True, coverage=coverage(None, 90.0)), ExitCode.TESTS_FAILED),
        # Every result is in the results file; the report that is missing makes it 3.
        (Facts(PASSED, {}, True, report_problems=["writing the JUnit XML failed"]), 3),
        (Facts(FAILED, {}, True, report_problems=["writing the JUnit XML failed"]), 3),
    ],
    ids=[
        "passed",
        "failed",
        "error",
        "nothing-collected",
        "empty-shard",
        "collection-error",
        "timeout",
        "not-run",
        "unfinished-shard",
        "coverage-below",
        "coverage-above",
        "coverage-none-recorded",
        "report-problem",
        "report-problem-and-failure",
    ],
)
def test_exit_code(facts: Facts, code: int):
    """Each case gets its code, the same whether a run or a merge reports it."""
    assert verdict(facts).code == code


def test_a_fault_is_its_own_outcome_with_the_report_problems_said_first():
    """A dead service is raised with its own code; reports that failed are still said."""
    result = verdict(
        Facts(
            FAILED,
            {},
            True,
            fatal=("service valkey exited", "log", 3),
            report_problems=["writing the durations failed"],
        )
    )
    assert result.fatal == ("service valkey exited", "log", 3)
    assert result.errors == [("writing the durations failed", "")]


def test_lines_name_what_failed_in_order():
    """Reports first, then collection errors, unfinished shards, tests that did not run."""
    result = verdict(
        Facts(
            results("not run"),
            {"t.py": "E   ImportError: no"},
            True,
            report_problems=["writing the JUnit XML failed"],
            unfinished=["shard 1-of-2: stopped early"],
        )
    )
    assert [message for message, _ in result.errors] == [
        "writing the JUnit XML failed",
        "collecting t.py failed",
        "shard 1-of-2: stopped early; its tests that did not run are reported as not run",
    ]


def test_tests_that_did_not_run_are_named_when_nothing_else_says_why():
    """A test left unrun with no failure and no unfinished shard behind it is an error line."""
    result = verdict(Facts(results("passed", "not run"), {}, True))
    assert result.errors == [("1 test(s) did not run (e.g. t.py::test_1)", "")]
