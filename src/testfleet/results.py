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

    @property
    def failing(self) -> bool:
        return self.outcome in FAILING
