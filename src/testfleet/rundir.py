"""The per-run directory: data of every service, a lock held while the run lives, and the
process registry that lets a later run (or the reaper, see reaper.py) stop what a killed run
left behind.

Nothing here trusts what another local user could have put in place: the base directory must
be ours (see `files.secure_dir`), and stale runs are cleaned only when their directory, lock
and records are owned by this user.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from testfleet.files import TRAVERSABLE_DIR, open_private, secure_dir

LOCK_NAME = "run.lock"
DEBRIS_SECONDS = 60.0
PIDS_NAME = "pids"
# The holders of the lanes' network namespaces (pid and start time, like PIDS_NAME).
NAMESPACES_NAME = "namespace-holders"
# Written by the docker backend when a run makes its first container.
CONTAINERS_MARKER = "containers"
# Every process a run starts carries this variable (set for the run, inherited by servers,
# lanes and whatever their tests start), so what escaped its process group can still be found.
# It is not among the variables `up` prints: a shell that sources them must not be marked.
MARK_VARIABLE = "_TESTFLEET_RUN"


def default_base() -> Path:
    """tmpfs when present: service data there is several times faster and steadier than disk.
    A run whose data does not fit there goes to `disk_base()` (see space.py)."""
    shm = Path("/dev/shm")
    return shm / base_name() if shm.is_dir() and os.access(shm, os.W_OK) else disk_base()


def disk_base() -> Path:
    """The base on disk ($TMPDIR or /tmp): where runs go when /dev/shm is missing or small.
    Like the tmpfs base, it is made and checked by this user (`secure_base`) before use."""
    return Path(tempfile.gettempdir()) / base_name()


def base_name() -> str:
    return f"testfleet-{os.getuid()}"


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 on; the command name (field 2) may hold spaces and
    parentheses, so split after its last ')'."""
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_text.rsplit(")", 1)[1].split()


def process_start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks, to tell it apart from a later one with its pid."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22


def parent_pid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None  # field 4


class RunDir:
    """A directory owned by one run, locked for as long as that run's process lives."""

    def __init__(self, path: Path, run_id: str, lock_fd: int) -> None:
        self.path = path
        self.run_id = run_id
        self._lock_fd = lock_fd

    @property
    def mark(self) -> str:
        """The value of MARK_VARIABLE for this run's processes."""
        return str(self.path)

    @classmethod
    def create(cls, base: Path) -> RunDir:
        secure_base(base)
        run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        path = base / run_id
        # Others may enter (PostgreSQL's account walks through to its data) but not list it;
        # everything inside is private to this user.
        path.mkdir(mode=TRAVERSABLE_DIR)
        os.chmod(path, TRAVERSABLE_DIR)
        lock_fd = open_private(path / LOCK_NAME, os.O_RDWR | os.O_CREAT)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        return cls(path, run_id, lock_fd)

    def record(self, pid: int) -> None:
        """Remember a process group leader this run started."""
        _append(self.path / PIDS_NAME, pid)

    def record_namespace(self, holder: int) -> None:
        """Remember a lane's network namespace by the process holding it: whatever runs in
        it is the run's, also a daemon that left the lane's process group and emptied its
        environment (see reaper.kill_namespaced)."""
        _append(self.path / NAMESPACES_NAME, holder)

    def remove(self) -> None:
        """Stop what the run recorded or marked, remove its directory, release its lock (its
        containers and what it made elsewhere are the reaper's to remove: see reaper.py)."""
        kill_recorded(self.path)
        kill_marked(self.mark)
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)


def secure_base(base: Path) -> Path:
    """The base of the run directories, made (or accepted) as this user's own."""
    if not base.parent.is_dir():
        base.parent.mkdir(parents=True, exist_ok=True)
    return secure_dir(base, TRAVERSABLE_DIR, what="run directory base")


def owned_file(path: Path) -> bool:
    """A regular file (not a link) of this user: only such records are believed."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def _append(registry: Path, pid: int) -> None:
    ticks = process_start_ticks(pid)
    fd = open_private(registry)
    with os.fdopen(fd, "a", encoding="ascii") as out:
        out.write(f"{pid} {ticks or 0}\n")


def recorded(path: Path, name: str = PIDS_NAME) -> list[tuple[int, int]]:
    """The processes (pid, start ticks) the run in `path` recorded in its file `name` that
    still run: a pid whose start time differs now belongs to someone else. Nothing when the
    file is not this user's own."""
    registry = path / name
    if not owned_file(registry):
        return []
    try:
        lines = registry.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    found = []
    for line in lines:
        pid_text, _, ticks_text = line.partition(" ")
        try:
            pid, ticks = int(pid_text), int(ticks_text or 0)
        except ValueError:
            continue
        if pid > 1 and process_start_ticks(pid) == ticks:
            found.append((pid, ticks))
    return found


def kill_recorded(path: Path) -> int:
    """SIGKILL every recorded process group still alive; returns how many were."""
    killed = 0
    for pid, _ in recorded(path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed += 1
    return killed


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def marked_processes(mark: str, *, skip: Iterable[int] = ()) -> list[int]:
    """Processes started with MARK_VARIABLE=mark in their environment (readable ones only:
    our own, or any when root)."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    skipped = {os.getpid(), *skip}
    found = []
    for pid in _pids():
        if pid in skipped:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(pid)
    return found


def kill_marked(mark: str, *, skip: Iterable[int] = ()) -> int:
    """SIGKILL what escaped its process group (setsid, double fork) but carries the mark."""
    pids = marked_processes(mark, skip=skip)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
