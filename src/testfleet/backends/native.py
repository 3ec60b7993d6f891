"""Native backend: supervised server processes, each in its own process group, each recorded
in the run directory so nothing outlives the run."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testfleet.errors import ServiceError
from testfleet.rundir import RunDir

STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account that runs servers which refuse root (PostgreSQL)."""

    name: str
    uid: int
    gid: int


def unprivileged_user() -> RunAs | None:
    """None when not root; else the `postgres` account if it exists, otherwise `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(name, entry.pw_uid, entry.pw_gid)
    raise ServiceError("running as root and no 'postgres' or 'nobody' account exists; create one")


class ManagedProcess:
    """One server process (and its group) started by this run."""

    def __init__(
        self,
        name: str,
        popen: subprocess.Popen[bytes],
        log_path: Path,
        stop_signal: int,
        signal_group: bool = False,
    ) -> None:
        self.signal_group = signal_group
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.stop_signal = stop_signal

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 15) -> str:
        """The last lines of the process's log, for error messages."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 8192))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def signal_stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if self.signal_group:
                    os.killpg(self.popen.pid, self.stop_signal)
                else:
                    os.kill(self.popen.pid, self.stop_signal)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Ask politely, then kill the whole group: forked children must not outlive it."""
        self.signal_stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


class Supervisor:
    """Starts processes for a run and stops every one of them at teardown."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self._processes: list[ManagedProcess] = []
        self._lock = threading.Lock()

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        run_as: RunAs | None = None,
        stop_signal: int = signal.SIGTERM,
        shell: bool = False,
        signal_group: bool = False,
    ) -> ManagedProcess:
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            popen = subprocess.Popen(
                argv[0] if shell else list(argv),
                shell=shell,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                # Own session: Ctrl-C in the terminal reaches testfleet, which stops servers in
                # order, instead of every server at once.
                start_new_session=True,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
        except OSError as exc:
            raise ServiceError(f"{name}: cannot start {argv[0]}: {exc.strerror or exc}") from None
        finally:
            log.close()
        self.run_dir.record(popen.pid)
        process = ManagedProcess(name, popen, log_path, stop_signal, signal_group)
        with self._lock:
            self._processes.append(process)
        return process

    def dead(self) -> list[ManagedProcess]:
        """Processes that exited although nobody stopped them."""
        with self._lock:
            return [p for p in self._processes if p.exit_code() is not None]

    def forget(self, process: ManagedProcess) -> None:
        with self._lock:
            if process in self._processes:
                self._processes.remove(process)

    def stop_all(self) -> None:
        with self._lock:
            processes = list(reversed(self._processes))
            self._processes.clear()
        # Signal all first, then wait: servers shut down side by side.
        for process in processes:
            process.signal_stop()
        for process in processes:
            process.stop()
