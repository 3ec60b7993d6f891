"""Process supervision, used by every backend and by the run itself: each process in its own
process group, recorded in the run directory (pid and start time) so nothing outlives the
run: servers, setup commands, readiness commands and the lanes themselves."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from testfleet.errors import ServiceError
from testfleet.files import PRIVATE_DIR, open_private
from testfleet.rundir import MARK_VARIABLE, RunDir, stat_fields

STOP_GRACE_SECONDS = 5.0
GROUP_POLL_SECONDS = 0.02
REDACTED = "[redacted]"
LOG_TAIL_BYTES = 8192
KEPT_LOGS = 30  # per project: enough to compare a few failed runs, not a growing heap


# Every pid this process started through testfleet (servers, commands, lanes, reapers): a
# child of ours that is not among them was reparented to us, an orphan of a test's daemon.
_spawned: set[int] = set()
_spawned_lock = threading.Lock()


def note_spawned(pid: int) -> None:
    with _spawned_lock:
        _spawned.add(pid)


def spawned(pid: int) -> bool:
    with _spawned_lock:
        return pid in _spawned


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


# What a server started as another account keeps of our environment: its /proc/PID/environ is
# readable by every process of that account, so nothing else (tokens, index credentials).
SERVER_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR")


def server_environ(run_as: RunAs | None) -> dict[str, str]:
    """The environment of a server: ours without private-index credentials, or under another
    account only the locale and PATH."""
    if run_as is not None:
        return {k: v for k, v in os.environ.items() if k in SERVER_VARIABLES or k.startswith("LC_")}
    from testfleet.credentials import child_environ

    return child_environ(os.environ)


def read_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages; '' when it cannot be read."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def describe_exit(code: int) -> str:
    """'exit code 3' or 'killed by SIGKILL', as a person would say it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ManagedProcess:
    """One process (and its group) started by this run."""

    def __init__(
        self,
        name: str,
        popen: subprocess.Popen[bytes],
        log_path: Path,
        stop_signal: int,
        *,
        signal_group: bool = False,
        keep_dir: Path | None = None,
        copier: threading.Thread | None = None,
    ) -> None:
        self.signal_group = signal_group
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.stop_signal = stop_signal
        self._keep_dir = keep_dir
        self._copier = copier
        self._kept: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 15) -> str:
        """The last lines of the process's log, for error messages."""
        self._flush_copier()
        return read_tail(self.log_path, lines)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def keep_log(self) -> Path:
        """Copy the log out of the run directory (which teardown deletes) into the project's
        `.testfleet/logs`, so the path an error names still exists afterwards."""
        if self._kept is not None or self._keep_dir is None:
            return self._kept or self.log_path
        self._flush_copier()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")
        target = self._keep_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{self.pid}.log"
        try:
            self._keep_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
            fd = open_private(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "wb") as out, open(self.log_path, "rb") as log:
                shutil.copyfileobj(log, out)
            _prune(self._keep_dir, target)
        except OSError:
            return self.log_path
        self._kept = target
        return target

    def _flush_copier(self) -> None:
        # A dead process's last words may still be in the redaction pipe.
        if self._copier is not None and self.popen.poll() is not None:
            self._copier.join(timeout=1)

    def signal_stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if self.signal_group:
                    os.killpg(self.popen.pid, self.stop_signal)
                else:
                    os.kill(self.popen.pid, self.stop_signal)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Ask politely, then kill the whole group: forked children must not outlive it. A
        group that was asked gets the whole grace, not only its leader: a shell that exits at
        once on SIGTERM must not cut short the server under it while it saves its data."""
        deadline = time.monotonic() + grace
        self.signal_stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace)
        if self.signal_group:
            while time.monotonic() < deadline and group_running(self.popen.pid):
                time.sleep(GROUP_POLL_SECONDS)
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        if self._copier is not None:
            self._copier.join(timeout=2)


def group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies, done already, do not count)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = stat_fields(int(name))
        if fields is not None and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _prune(folder: Path, current: Path) -> None:
    """Keep the newest logs; never the one just written, whatever the clock says."""
    others = sorted(
        (p for p in folder.glob("*.log") if p != current), key=lambda p: p.stat().st_mtime
    )
    for old in others[: max(len(others) - (KEPT_LOGS - 1), 0)]:
        old.unlink(missing_ok=True)


def _copy_redacted(source: IO[bytes], log_fd: int, secrets: Sequence[bytes]) -> None:
    """Copy a process's output to its log line by line, with every secret replaced. When the
    log cannot be written (its disk is full), the output is still read to its end and dropped:
    a process whose pipe nobody reads blocks once the pipe's buffer is full."""
    with source, os.fdopen(log_fd, "wb", buffering=0) as log:
        writable = True
        for line in iter(source.readline, b""):
            if not writable:
                continue
            clean = line
            for secret in secrets:
                clean = clean.replace(secret, REDACTED.encode())
            try:
                log.write(clean)
            except OSError:
                writable = False


class Supervisor:
    """Starts processes for a run and stops every one of them at teardown. Once stopped, it
    starts nothing more: a thread still starting a service cannot leave a server behind."""

    def __init__(self, run_dir: RunDir, keep_dir: Path | None = None) -> None:
        self.run_dir = run_dir
        self.keep_dir = keep_dir
        self._processes: list[ManagedProcess] = []
        self._lock = threading.Lock()
        self._closed = False

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
        redact: Sequence[str] = (),
        umask: int = -1,
    ) -> ManagedProcess:
        secrets = [s.encode() for s in redact if s]
        child_env = dict(server_environ(run_as) if env is None else env)
        child_env[MARK_VARIABLE] = self.run_dir.mark
        log_fd = open_private(log_path)
        try:
            with self._lock:
                if self._closed:
                    raise ServiceError(f"{name}: not started, the run is stopping")
                try:
                    popen = subprocess.Popen(
                        argv[0] if shell else list(argv),
                        shell=shell,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE if secrets else log_fd,
                        stderr=subprocess.STDOUT,
                        env=child_env,
                        cwd=cwd,
                        # Own session: Ctrl-C in the terminal reaches testfleet, which stops
                        # servers in order, instead of every server at once.
                        start_new_session=True,
                        user=run_as.uid if run_as else None,
                        group=run_as.gid if run_as else None,
                        extra_groups=[] if run_as else None,
                        umask=umask,
                    )
                except OSError as exc:
                    raise ServiceError(
                        f"{name}: cannot start {argv[0]}: {exc.strerror or exc}"
                    ) from None
                self.run_dir.record(popen.pid)
                note_spawned(popen.pid)
                copier = None
                if secrets:
                    assert popen.stdout is not None
                    copier = threading.Thread(
                        target=_copy_redacted,
                        args=(popen.stdout, os.dup(log_fd), secrets),
                        name=f"log {name}",
                        daemon=True,
                    )
                    copier.start()
                process = ManagedProcess(
                    name,
                    popen,
                    log_path,
                    stop_signal,
                    signal_group=signal_group,
                    keep_dir=self.keep_dir,
                    copier=copier,
                )
                self._processes.append(process)
        finally:
            os.close(log_fd)
        return process

    def run_to_end(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        shell: bool = False,
        redact: Sequence[str] = (),
        umask: int = -1,
    ) -> tuple[int | None, ManagedProcess]:
        """A one-shot command (setup, a readiness check) as a supervised process group:
        its exit code, or None when it ran out of time and was killed with its children."""
        process = self.spawn(
            name,
            argv,
            log_path=log_path,
            env=env,
            cwd=cwd,
            shell=shell,
            signal_group=True,
            stop_signal=signal.SIGKILL,
            redact=redact,
            umask=umask,
        )
        try:
            code: int | None = process.popen.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            code = None
        finally:
            # Also on Ctrl-C: whatever the command started goes with it.
            process.kill()
            self.forget(process)
        return code, process

    def processes(self) -> list[ManagedProcess]:
        with self._lock:
            return list(self._processes)

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
            self._closed = True
            processes = list(reversed(self._processes))
            self._processes.clear()
        # Signal all first, then wait: servers shut down side by side.
        for process in processes:
            process.signal_stop()
        for process in processes:
            process.stop()
