"""What a run leaves behind, and the watchdog that removes it: when its parent dies (even by
SIGKILL) the reaper's stdin pipe closes, and it stops every process the run recorded or
marked, removes its containers and what it made on external servers, removes the run
directory, and removes the files the run owned (the env file of `up`) when they still name
this run.

A parent-death signal (PR_SET_PDEATHSIG) is not enough: it fires when the *thread* that
spawned a child exits, and the stack starts services from worker threads.

    python -m testfleet.reaper RUN_DIR RUN_ID [OWNED_FILE ...]

The same cleanup serves a later run, which removes what runs whose owner is gone left
behind (`cleanup_stale`).

A process is the run's when it is recorded (a group leader), carries the run's mark in its
environment, or runs in one of the run's lane network namespaces: a test's daemon may leave
its process group (setsid) and empty its environment (`env -i`), but not its namespace.
Without `network = "namespace"`, such a daemon is found only while testfleet lives (it is
reparented to testfleet, the child subreaper; see runtime.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from testfleet import leftovers
from testfleet.files import unsafe_reason
from testfleet.rundir import (
    CONTAINERS_MARKER,
    DEBRIS_SECONDS,
    LOCK_NAME,
    NAMESPACES_NAME,
    kill_marked,
    kill_recorded,
    owned_file,
    process_start_ticks,
    recorded,
)

# Rounds of looking for processes in a namespace: a process that forks while the first round
# kills is found in a later one; a process that is dying already is found once more.
NAMESPACE_ROUNDS = 50
NAMESPACE_ROUND_SECONDS = 0.01


def remove_if_ours(path: Path, run_id: str) -> bool:
    """Remove a file the run wrote, unless another run has written it since."""
    try:
        if f"TESTFLEET_RUN_ID={run_id}" not in path.read_text(encoding="utf-8"):
            return False
        path.unlink()
    except (OSError, UnicodeDecodeError):
        return False
    return True


def clean(path: Path) -> None:
    """Everything a run that is gone left: its processes, its containers, what it made on
    external servers, its directory."""
    # First: a namespace is known to be the run's only while its recorded holder lives.
    kill_namespaced(path)
    kill_recorded(path)
    kill_marked(str(path))
    remove_containers(path)
    drop_external(path)
    shutil.rmtree(path, ignore_errors=True)


def cleanup_stale(base: Path) -> list[Path]:
    """Stop the processes and remove the directories of runs whose owner is gone.

    Only directories, locks and process records this user owns are trusted: a "stale run"
    planted by someone else must not make us kill a process of their choosing.
    """
    removed = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        lock = path / LOCK_NAME
        if unsafe_reason(path) is not None:
            continue
        if not lock.exists():
            # No lock: a run being created this instant, or debris that a process of a dead
            # run wrote after its directory was removed. Only the second is old.
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # another run starting now cleaned it first
            if age > DEBRIS_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            continue
        if not owned_file(lock):
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its run is alive
        clean(path)
        os.close(fd)
        removed.append(path)
    return removed


def kill_namespaced(path: Path) -> int:
    """SIGKILL whatever runs in the lane network namespaces of the run in `path` whose
    holders still run; returns how many processes were found."""
    return kill_in_namespaces(recorded(path, NAMESPACES_NAME))


def kill_in_namespaces(holders: Iterable[tuple[int, int]]) -> int:
    """SIGKILL every process in the network namespaces of `holders` (pid, start ticks),
    the holders too; returns how many processes were found."""
    opened = (_open_namespace(pid, ticks) for pid, ticks in holders)
    pinned = [fd for fd in opened if fd is not None]
    try:
        return kill_inside(pinned)
    finally:
        for fd in pinned:
            os.close(fd)


def kill_inside(namespaces: Sequence[int]) -> int:
    """SIGKILL every process in the network namespaces open as the fds `namespaces`. Open,
    because a namespace's inode number is reused once it is gone: it must never name
    another's while its processes are looked for."""
    wanted = {_identity(os.fstat(fd)) for fd in namespaces}
    # Never our own network, whatever went wrong: that would be everything of this machine.
    wanted.discard(_namespace_of(os.getpid()))
    me, found = os.getpid(), set()
    for _ in range(NAMESPACE_ROUNDS if wanted else 0):
        inside = [pid for pid in _pids() if pid != me and _namespace_of(pid) in wanted]
        if not inside:
            break
        for pid in inside:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        found.update(inside)
        time.sleep(NAMESPACE_ROUND_SECONDS)
    return len(found)


def _open_namespace(pid: int, ticks: int) -> int | None:
    """The network namespace of the process `pid` started at `ticks`, opened; None when that
    process is gone (its pid may be another's now: checked again once it is open)."""
    try:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if process_start_ticks(pid) != ticks:
        os.close(fd)
        return None
    return fd


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _namespace_of(pid: int) -> tuple[int, int] | None:
    """Which network namespace `pid` is in; None when it is gone, a zombie, or not ours to
    look at (another user's, when we are not root)."""
    try:
        return _identity(os.stat(f"/proc/{pid}/ns/net"))
    except OSError:
        return None


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def drop_external(path: Path) -> int:
    """What the run in `path` made on external servers and could not drop itself, each by its
    kind's `drop_leftover`; returns how many were tried. A server gone or a driver missing
    does not stop the others."""
    if not owned_file(path / leftovers.FILE_NAME):
        return 0
    from testfleet.kinds import KINDS

    tried = 0
    for entry in leftovers.entries(path):
        kind = KINDS.get(str(entry.get("kind")))
        if kind is None or kind.drop_leftover is None:
            continue
        tried += 1
        with contextlib.suppress(Exception):
            kind.drop_leftover(entry)
    return tried


def remove_containers(path: Path) -> int:
    """The containers of the run in `path`, when it made any (it left a marker): the engine is
    only asked about runs that used it."""
    if not owned_file(path / CONTAINERS_MARKER):
        return 0
    from testfleet.backends.docker_engine import remove_for_run_dir

    return remove_for_run_dir(path)


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    run_dir, run_id, owned = Path(argv[0]), argv[1], [Path(a) for a in argv[2:]]
    while sys.stdin.buffer.read(4096):
        pass
    # A normal teardown removed the directory before closing the pipe: then nothing is left.
    if run_dir.exists():
        clean(run_dir)
        for path in owned:
            remove_if_ours(path, run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
