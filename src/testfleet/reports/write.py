"""Writing a run's reports from its results: the results file first (plain JSON, it cannot
fail on odd characters), then every other report from the same results. A report that fails
is named and the others are still written."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from testfleet import durations, pytest_cache
from testfleet.project import Project
from testfleet.reports.junit import write_junit
from testfleet.reports.results_file import write_results
from testfleet.results import TestResult


def collection_errors(errors: Mapping[str, str], python: str = "") -> list[TestResult]:
    """Collection errors as results: the JUnit shows each as an errored test."""
    return [
        TestResult(nodeid, "error", message="collection error", text=text, python=python)
        for nodeid, text in errors.items()
    ]


def write_reports(
    project: Project,
    results: Sequence[TestResult],
    errors: Sequence[TestResult],
    versions: Mapping[str, str],
    *,
    measured: Mapping[str, float],
    lastfailed: bool,
) -> list[str]:
    """The results file, the JUnit XML, the durations (`measured` merged in) and pytest's
    lastfailed cache (`lastfailed`). Returns what could not be written."""
    results_path = project.root / ".testfleet" / "results.json"
    collect_errors = {e.nodeid: e.text for e in errors}
    problems: list[str] = []

    def attempt(what: str, write: Callable[[], object]) -> None:
        try:
            write()
        except Exception as exc:
            problems.append(
                f"writing {what} failed ({type(exc).__name__}: {exc}); every result is in"
                f" {results_path}"
            )

    write_results(
        results_path, results, python=",".join(versions.values()), collect_errors=collect_errors
    )
    junit = project.path(project.config.junit_xml)
    attempt("the JUnit XML", lambda: write_junit(junit, [*errors, *results], versions=versions))
    if measured:
        path = project.path(project.config.durations)
        attempt("the durations", lambda: durations.merge(path, measured))
    if lastfailed:
        attempt(
            "pytest's lastfailed cache",
            lambda: pytest_cache.merge_lastfailed(project, results, collect_errors),
        )
    return problems
