"""One run's lifetime: its directory, its reaper, its supervisor, and signals turned into
exceptions so that teardown always runs."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType

from testfleet.backends.native import Supervisor
from testfleet.errors import Interrupted
from testfleet.rundir import RunDir, default_base


class Run:
    """Context manager: on exit, every process is stopped and the directory removed."""

    def __init__(self, base: Path | None = None) -> None:
        self.run_dir = RunDir.create(base or default_base())
        self.supervisor = Supervisor(self.run_dir)
        # The reaper outlives a SIGKILL of this process; it owns the cleanup then.
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "testfleet.reaper", str(self.run_dir.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with teardown_shield():
            self.supervisor.stop_all()
            self.run_dir.remove()
            assert self._reaper.stdin is not None
            self._reaper.stdin.close()
            self._reaper.wait()


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind the stack like Ctrl-C does.

    SIGINT is restored too: a shell starts background jobs (`testfleet up &` in a CI script)
    with SIGINT ignored, and Python keeps it ignored, so `kill -INT` would do nothing.
    """
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def teardown_shield() -> Iterator[None]:
    """A second Ctrl-C or SIGTERM during teardown must not cut it short."""
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
