"""A Markdown summary for CI pages (`$GITHUB_STEP_SUMMARY`): totals per Python version,
failures by test id, the slowest tests, coverage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from testfleet.reports.coverage import CoverageOutcome
from testfleet.reports.summary import counts_line
from testfleet.results import TestResult

SLOWEST = 10
FAILURES = 50


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def markdown(
    results: Sequence[TestResult],
    versions: Mapping[str, str],
    coverage: CoverageOutcome | None,
    *,
    title: str = "testfleet",
) -> str:
    lines = [f"## {title}", "", "| python | outcome |", "|---|---|"]
    for label, version in versions.items() or {"": ""}.items():
        mine = [r for r in results if r.python == label]
        lines.append(f"| {version or 'default'} | {counts_line(mine)} |")
    failing = [r for r in results if r.failing]
    if failing:
        lines += [
            "",
            f"### Failures ({len(failing)})",
            "",
            "| test | python | why |",
            "|---|---|---|",
        ]
        for result in failing[:FAILURES]:
            version = versions.get(result.python, result.python)
            lines.append(f"| `{_cell(result.nodeid)}` | {version} | {_cell(result.message)} |")
        if len(failing) > FAILURES:
            lines.append(f"| ... and {len(failing) - FAILURES} more | | |")
    ran = sorted((r for r in results if r.outcome != "not run"), key=lambda r: -r.duration)
    if ran:
        lines += ["", "### Slowest tests", "", "| seconds | test |", "|---|---|"]
        lines += [f"| {r.duration:.2f} | `{_cell(r.nodeid)}` |" for r in ran[:SLOWEST]]
    if coverage is not None and coverage.total is not None:
        if coverage.partial:
            lines += [
                "",
                f"**Coverage of this shard alone:** {coverage.total:.2f}% (partial:"
                " the merge job combines every shard's coverage and applies the threshold)",
            ]
        else:
            threshold = f" (fail under {coverage.fail_under:g}%)" if coverage.fail_under else ""
            lines += ["", f"**Coverage:** {coverage.total:.2f}%{threshold}"]
    return "\n".join(lines) + "\n"


def append(path: Path, text: str) -> None:
    """CI pages collect what every step appends."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(text)
