"""Progress while lanes run: a live display on a terminal, plain periodic lines elsewhere. It
reads snapshots of the coordinator (taken only when it is time to show one)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:  # rich is imported when a live display is made (a terminal)
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

PLAIN_INTERVAL_SECONDS = 10.0
LIVE_INTERVAL_SECONDS = 0.1


@dataclass(frozen=True)
class Snapshot:
    """The run as progress shows it."""

    done: int
    total: int
    failed: int
    elapsed: float  # since the command started, as the summary's times
    lanes: tuple[tuple[int, str], ...]  # (lane, what it is doing)


class Progress(Protocol):
    def update(self, snapshot: Callable[[], Snapshot]) -> None:
        """Called every tick: take a snapshot when it is time to show one."""
        ...

    def close(self) -> None: ...


class NullProgress:
    """One interactive lane prints pytest's own progress."""

    def update(self, snapshot: Callable[[], Snapshot]) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """CI logs: a line every few seconds, nothing that redraws."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = PLAIN_INTERVAL_SECONDS):
        self.stream = stream
        self.interval = interval
        self.last = time.monotonic()

    def update(self, snapshot: Callable[[], Snapshot]) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        seen = snapshot()
        lanes = "; ".join(f"lane {n}: {what}" for n, what in seen.lanes)
        self.stream.write(
            f"testfleet: {seen.done}/{seen.total} tests done, {seen.failed} failed,"
            f" {seen.elapsed:.0f} s; {lanes}\n"
        )
        self.stream.flush()

    def close(self) -> None:
        pass


class LiveProgress:
    """A terminal: overall counts and what every lane is running, redrawn in place."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.last = 0.0

    def _render(self, seen: Snapshot) -> Table:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        style = "red" if seen.failed else "green"
        table.add_row(
            f"[bold]{seen.done}/{seen.total}[/] tests",
            f"[{style}]{seen.failed} failed[/]",
            f"{seen.elapsed:.0f} s",
        )
        for lane, what in seen.lanes:
            table.add_row(f"lane {lane}", what, "")
        return table

    def update(self, snapshot: Callable[[], Snapshot]) -> None:
        now = time.monotonic()
        if now - self.last < LIVE_INTERVAL_SECONDS:
            return
        self.last = now
        if self.live is None:
            from rich.live import Live

            self.live = Live(console=self.console, transient=True, auto_refresh=False)
            self.live.start()
        self.live.update(self._render(snapshot()), refresh=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
