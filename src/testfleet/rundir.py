"""The per-run directory: data of every service, a lock held while the run lives, and the
process registry that lets a later run (or the reaper) stop what a killed run left behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

LOCK_NAME = "run.lock"
PIDS_NAME = "pids"


def default_base() -> Path:
    """tmpfs when present: service data there is several times faster and steadier than disk."""
    shm = Path("/dev/shm")
    root = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return root / f"testfleet-{os.getuid()}"


def process_start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks, to tell it apart from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its closing ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


class RunDir:
    """A directory owned by one run, locked for as long as that run's process lives."""

    def __init__(self, path: Path, run_id: str, lock_fd: int) -> None:
        self.path = path
        self.run_id = run_id
        self._lock_fd = lock_fd

    @classmethod
    def create(cls, base: Path) -> RunDir:
        base.mkdir(parents=True, exist_ok=True)
        # Others need to traverse into it: PostgreSQL runs as an unprivileged user under root.
        base.chmod(0o711)
        cleanup_stale(base)
        run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        path = base / run_id
        path.mkdir(mode=0o711)
        lock_fd = os.open(path / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        return cls(path, run_id, lock_fd)

    def record(self, pid: int) -> None:
        """Remember a process group leader this run started."""
        ticks = process_start_ticks(pid)
        with open(self.path / PIDS_NAME, "a", encoding="ascii") as registry:
            registry.write(f"{pid} {ticks or 0}\n")

    def remove(self) -> None:
        kill_recorded(self.path)
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)


def kill_recorded(path: Path) -> int:
    """SIGKILL every recorded process group still alive; returns how many were."""
    try:
        lines = (path / PIDS_NAME).read_text(encoding="ascii").splitlines()
    except OSError:
        return 0
    killed = 0
    for line in lines:
        pid_text, _, ticks_text = line.partition(" ")
        pid, ticks = int(pid_text), int(ticks_text or 0)
        if process_start_ticks(pid) != ticks:
            continue  # gone, or the pid now belongs to someone else
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed += 1
    return killed


def cleanup_stale(base: Path) -> list[Path]:
    """Stop the processes and remove the directories of runs whose owner is gone."""
    removed = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        lock = path / LOCK_NAME
        if not path.is_dir() or not lock.exists():
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its run is alive
        kill_recorded(path)
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
        removed.append(path)
    return removed
