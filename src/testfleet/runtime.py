"""One run's lifetime: its directory, its reaper, its supervisor, and signals turned into
exceptions so that teardown always runs."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType

from testfleet import reaper
from testfleet.errors import Interrupted
from testfleet.processes import Supervisor, note_spawned, spawned
from testfleet.rundir import (
    MARK_VARIABLE,
    RunDir,
    default_base,
    parent_pid,
    process_start_ticks,
    secure_base,
)

PR_SET_CHILD_SUBREAPER = 36


def _set_child_subreaper(on: bool) -> bool:
    """Linux: processes a test daemonizes (setsid, double fork) are reparented to us when
    their parent dies, instead of to init, so teardown can still stop them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _now_ticks() -> int:
    """Now, in the clock ticks since boot that /proc uses for process start times."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return int(uptime * os.sysconf("SC_CLK_TCK"))


def _orphans(since_ticks: int) -> list[int]:
    """Children of this process that we did not start, born after `since_ticks`."""
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if parent_pid(pid) != me or spawned(pid):
            continue
        if (process_start_ticks(pid) or 0) >= since_ticks:
            found.append(pid)
    return found


class Run:
    """Context manager: on exit, every process is stopped and the directory removed."""

    def __init__(
        self,
        base: Path | None = None,
        *,
        keep_logs: Path | None = None,
        owned_files: tuple[Path, ...] = (),
    ) -> None:
        self._began = _now_ticks()
        # What runs whose owner is gone left, before this run has anything to leave.
        reaper.cleanup_stale(secure_base(base or default_base()))
        self.run_dir = RunDir.create(base or default_base())
        self.supervisor = Supervisor(self.run_dir, keep_dir=keep_logs)
        self._subreaper = _set_child_subreaper(True)
        # The reaper outlives a SIGKILL of this process; it owns the cleanup then. It must not
        # carry the run's mark, or it would find itself among what it stops.
        environ = {k: v for k, v in os.environ.items() if k != MARK_VARIABLE}
        self._reaper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "testfleet.reaper",
                str(self.run_dir.path),
                self.run_dir.run_id,
                *map(str, owned_files),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=environ,
        )
        note_spawned(self._reaper.pid)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with teardown_shield():
            self.supervisor.stop_all()
            reaper.remove_containers(self.run_dir.path)
            self.run_dir.remove()
            if self._subreaper:
                self._stop_orphans()
                _set_child_subreaper(False)
            assert self._reaper.stdin is not None
            self._reaper.stdin.close()
            self._reaper.wait()

    def _stop_orphans(self) -> None:
        # Killed, not reaped: a child that a still-running thread started itself (initdb, a
        # copy) must keep its exit status for that thread's own wait. Zombies go when we exit.
        for pid in _orphans(self._began):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


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
