"""What a run's lanes did, frozen: the outcome the reports, the rechecks, the CI shards and
the exit code read (see verdict.py), and a service's fault while tests ran."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from testfleet.results import TestResult


@dataclass(frozen=True)
class ServiceProblem:
    """A service that failed while tests ran: what happened, where its log is kept, and the
    log's last lines."""

    what: str
    log: Path | None
    details: str

    @property
    def message(self) -> str:
        return f"{self.what}; its log: {self.log}" if self.log else self.what


@dataclass(frozen=True)
class GroupOutcome:
    label: str
    collected: tuple[str, ...] | None
    selected: tuple[str, ...]
    results: tuple[TestResult, ...]
    collect_errors: Mapping[str, str]
    unknown_durations: int
    per_unknown: float


@dataclass(frozen=True)
class LaneFacts:
    lane: int
    group: str
    busy: float
    wall: float
    startup: float
    tests: int
    restarts: int


@dataclass(frozen=True)
class RunOutcome:
    """Everything a finished (or stopped) run tells: what reports and the exit code read."""

    groups: tuple[GroupOutcome, ...]
    lanes: tuple[LaneFacts, ...]
    timed_out: bool
    interrupted: bool
    stopping: str | None
    fatal: str | None
    fatal_details: str
    fatal_code: int
    notices: tuple[str, ...]
    # For each failed test (group, node id): the tests its lane's process ran before it.
    predecessors: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    first_result_at: float | None = None  # time.monotonic() of the first test's result
    # The interrupt (Ctrl-C, SIGTERM) that stopped the run, raised again once it is reported.
    interruption: BaseException | None = field(default=None, compare=False, repr=False)

    @property
    def results(self) -> list[TestResult]:
        return [r for group in self.groups for r in group.results]

    @property
    def collect_errors(self) -> dict[str, str]:
        return {k: v for group in self.groups for k, v in group.collect_errors.items()}

    @property
    def collected(self) -> bool:
        """Whether any group got as far as collecting (else reports are left alone)."""
        return any(g.collected is not None or g.collect_errors for g in self.groups)
