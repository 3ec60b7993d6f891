"""Progress while lanes run: a live display on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from testfleet.lanes.coordinator import Coordinator

if TYPE_CHECKING:  # rich only for the live display: CI logs start sooner without it
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

PLAIN_INTERVAL_SECONDS = 10.0


def _current(c: Coordinator, now: float) -> list[tuple[int, str]]:
    rows = []
    for state in c.lanes.values():
        if state.process is None:
            what = "finished"
        elif state.current is not None:
            what = f"{state.current} ({now - state.started_at:.1f} s)"
        elif not state.collected:
            what = "collecting"
        else:
            what = "between tests"
        rows.append((state.lane, what))
    return rows


class NullProgress:
    """One interactive lane prints pytest's own progress."""

    def update(self, coordinator: Coordinator) -> None:
        pass

    def close(self, coordinator: Coordinator) -> None:
        pass


class PlainProgress:
    """CI logs: a line every few seconds, nothing that redraws."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = PLAIN_INTERVAL_SECONDS):
        self.stream = stream
        self.interval = interval
        self.last = time.monotonic()

    def update(self, coordinator: Coordinator) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        done, total, failed = coordinator.counts()
        lanes = "; ".join(f"lane {n}: {what}" for n, what in _current(coordinator, now))
        elapsed = now - coordinator.began
        self.stream.write(
            f"testfleet: {done}/{total} tests done, {failed} failed, {elapsed:.0f} s; {lanes}\n"
        )
        self.stream.flush()

    def close(self, coordinator: Coordinator) -> None:
        pass


class LiveProgress:
    """A terminal: overall counts and what every lane is running, redrawn in place."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.last = 0.0

    def _render(self, coordinator: Coordinator) -> Table:
        now = time.monotonic()
        done, total, failed = coordinator.counts()
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        style = "red" if failed else "green"
        table.add_row(
            f"[bold]{done}/{total}[/] tests",
            f"[{style}]{failed} failed[/]",
            f"{now - coordinator.began:.0f} s",
        )
        for lane, what in _current(coordinator, now):
            table.add_row(f"lane {lane}", what, "")
        return table

    def update(self, coordinator: Coordinator) -> None:
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        if self.live is None:
            from rich.live import Live

            self.live = Live(console=self.console, transient=True, auto_refresh=False)
            self.live.start()
        self.live.update(self._render(coordinator), refresh=True)

    def close(self, coordinator: Coordinator) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
