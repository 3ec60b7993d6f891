"""Ctrl-C (and SIGTERM, SIGHUP) held over code that would turn it into something else, then
delivered as itself once that code is done.

Raised inside the import of a native extension, a KeyboardInterrupt does not come out as one:
pydantic-core's Rust code panics (pyo3's PanicException) or wraps it in a SchemaError, so a
Ctrl-C in testfleet's first second was a traceback or an "internal error". The imports that
pull those in run with the signals held; a signal that came meanwhile goes to the handler in
place before, as the block ends (a few tenths of a second later at most).
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType

HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class HeldSignals:
    """`with HeldSignals():` the first of HELD that arrives in the block is raised again
    when the block ends (main thread only, as every signal handler)."""

    def __enter__(self) -> None:
        self.caught: int | None = None
        self.previous = {signum: signal.signal(signum, self._hold) for signum in HELD}

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        if self.caught is None:
            self.caught = signum

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self.previous.items():
            # None: a handler not set from Python; Python's own is the nearest there is.
            fallback = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, handler if handler is not None else fallback)
        if self.caught is not None:
            signal.raise_signal(self.caught)
