"""The end-of-run summary: failures first, then the slowest tests and how well the lanes
were balanced, then one line with the counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from testfleet.lanes.outcome import LaneFacts
from testfleet.plan import ideal_bound
from testfleet.reports.coverage import CoverageOutcome
from testfleet.reports.results_file import shown
from testfleet.results import Outcome, TestResult

FAILURE_TEXT_LINES = 40
SLOWEST = 10
ORDER: tuple[Outcome, ...] = (
    "failed",
    "error",
    "passed",
    "skipped",
    "xfailed",
    "xpassed",
    "not run",
)


@dataclass(frozen=True)
class RunFacts:
    wall: float  # lanes start to last lane end
    total: float  # the whole command: stack, lanes, reports, teardown
    lanes: Sequence[LaneFacts]
    unknown_durations: int
    per_unknown: float
    coverage: CoverageOutcome | None = None
    versions: Mapping[str, str] = field(default_factory=dict)  # a matrix: label -> version
    first_result: float | None = None  # seconds from the command's start


def counts_line(results: Sequence[TestResult]) -> str:
    counts = Counter(r.outcome for r in results)
    parts = [f"{counts[o]} {o}" for o in ORDER if counts[o]]
    return ", ".join(parts) or "no tests"


def print_summary(console: Console, results: Sequence[TestResult], facts: RunFacts) -> None:
    failing = [r for r in results if r.failing]
    if failing:
        console.rule(f"[red]failures ({len(failing)})")
        for result in failing:
            where = f"python {result.python}, " if result.python else ""
            console.print(
                f"[bold red]{result.outcome.upper()}[/] {escape(result.nodeid)}"
                f" ({where}lane {result.lane})"
            )
            if result.verdict:
                console.print(f"[bold yellow]{escape(result.verdict)}[/]", highlight=False)
            lines = result.text.rstrip().splitlines()[-FAILURE_TEXT_LINES:]
            # The why of a crash, a timeout or an interrupt may be in the message alone.
            if result.message and result.message not in "\n".join(lines):
                console.print(f"[red]{escape(result.message)}[/]", highlight=False)
            if lines:
                console.print(escape("\n".join(lines)), highlight=False)
            if result.output:
                # Long output: its start and end, the cut marked (the results file has it all).
                console.print(escape(shown(result.output.rstrip())), style="dim", highlight=False)
            console.print()
    flaky = [r for r in results if r.flaky]
    if flaky:
        console.rule(f"[yellow]flaky ({len(flaky)})")
        for result in flaky:
            console.print(f"[yellow]FLAKY[/] {escape(result.nodeid)}: {escape(result.verdict)}")
    ran = [r for r in results if r.outcome != "not run"]
    slowest = sorted(ran, key=lambda r: (-r.duration, r.nodeid))[:SLOWEST]
    if slowest:
        console.rule("slowest tests")
        for result in slowest:
            console.print(
                f"{result.duration:8.2f} s  {escape(result.nodeid)} (lane {result.lane})",
                highlight=False,
            )
    # Every lane that ran, also one that found the queue empty: it cost its start-up.
    lanes = [lane for lane in facts.lanes if lane.tests or lane.wall]
    if any(lane.tests for lane in lanes):
        busy = [lane.busy for lane in lanes]
        mean = sum(busy) / len(busy)
        ideal = ideal_bound([r.duration for r in ran], len(facts.lanes))
        console.rule("lanes")
        for lane in lanes:
            restarts = f", {lane.restarts} restart(s)" if lane.restarts else ""
            console.print(
                f"lane {lane.lane}: {lane.tests} tests, busy {lane.busy:.2f} s of"
                f" {lane.wall:.2f} s (start-up and collection {lane.startup:.2f} s){restarts}",
                highlight=False,
            )
        balance = max(busy) / mean if mean else 1.0
        console.print(
            f"balance: busiest lane {max(busy):.2f} s / mean {mean:.2f} s = {balance:.2f};"
            f" wall {facts.wall:.2f} s vs ideal {ideal:.2f} s"
            f" (= max(test time / {len(facts.lanes)} lanes, longest test))",
            highlight=False,
        )
        if facts.first_result is not None:
            console.print(
                f"first test result {facts.first_result:.2f} s after the command started",
                highlight=False,
            )
        if facts.unknown_durations:
            console.print(
                f"{facts.unknown_durations} test(s) had no measured duration and were"
                f" estimated at {facts.per_unknown:.2f} s each; they are measured now",
                highlight=False,
            )
    if facts.versions:
        console.rule("python versions")
        for label, version in facts.versions.items():
            mine = [r for r in results if r.python == label]
            console.print(f"python {version}: {counts_line(mine)}", highlight=False)
    if facts.coverage is not None and (facts.coverage.total is not None or facts.coverage.left_out):
        print_coverage(console, facts.coverage)
    style = "red" if failing else "green"
    took = f" in {facts.total:.2f} s" if facts.total else ""
    console.rule(f"[{style}]{counts_line(results)}{took}")


def print_coverage(console: Console, coverage: CoverageOutcome) -> None:
    """coverage.py's table, then the total on a line of its own (the one CI reads); a CI
    shard's partial total alone."""
    if coverage.partial:
        console.rule("coverage (this shard only)")
    else:
        console.rule("coverage")
        if coverage.table:
            console.print(escape(coverage.table.rstrip()), highlight=False)
    if coverage.left_out:
        console.print(
            f"{len(coverage.left_out)} measured file(s) that do not exist here are left out"
            f" (e.g. {escape(coverage.left_out[0])})",
            highlight=False,
        )
    if coverage.total is not None:
        console.print(escape(coverage.total_line), highlight=False)
