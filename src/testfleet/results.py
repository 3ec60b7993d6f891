"""One result per collected test, as lanes report them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["passed", "failed", "error", "skipped", "xfailed", "xpassed", "not run"]
FAILING: tuple[Outcome, ...] = ("failed", "error")


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: Outcome
    duration: float = 0.0
    lane: int | None = None
    message: str = ""  # one line: the assertion, the skip reason, the crash
    text: str = ""  # the whole traceback or explanation
    output: str = ""  # captured stdout/stderr of a failing test
    # Whether `duration` says how long the test takes: not for tests that never ran, nor for
    # one whose lane crashed under it (a timeout does: the test is at least that slow).
    timed: bool = True
    python: str = ""  # the matrix entry (Python version) it ran on, "" without a matrix
    shard: str = ""  # "2-of-4" when it ran in a CI shard
    verdict: str = ""  # why it failed, when rechecked: "order dependent: ... fails after X"
    flaky: bool = False  # failed, then passed on a rerun (--rerun-flaky)
    # Where a failing test failed: its file relative to the project's directory, and the line
    # in that file (the deepest frame of the traceback there, else the test's own line).
    file: str = ""
    line: int | None = None

    @property
    def failing(self) -> bool:
        return self.outcome in FAILING
