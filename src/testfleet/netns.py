"""A network namespace per lane (`network = "namespace"`): every lane gets its own loopback,
so its servers listen on their default ports and a suite's hard-coded `localhost:6379` or
fixed-port fixtures meet only that lane's.

A namespace lives as long as its holder, a small process of the run (recorded and stopped
like every other), and whatever else runs in it: the kernel removes the namespace when the
last process in it ends. The holder is recorded as such too, so that after a SIGKILL of
testfleet its reaper stops everything in the namespace, a test's daemon with an emptied
environment included (see reaper.kill_namespaced). Processes join it through `nsenter`;
threads of testfleet (readiness probes, PostgreSQL's admin connection) join it with
setns(2), which changes only the calling thread's network namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from testfleet import capabilities
from testfleet.backends.base import Handle
from testfleet.errors import ConfigError, ServiceError
from testfleet.processes import ManagedProcess, Supervisor
from testfleet.reaper import kill_inside
from testfleet.threads import SLICE

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
HOLDER_SECONDS = 10.0
# The holder: brings the namespace's loopback up (SIOCSIFFLAGS on "lo"), says so, then waits
# until it is stopped. Pure Python: no dependency on iproute2.
HOLDER = r"""
import fcntl, socket, struct
IFF_UP, SIOCGIFFLAGS, SIOCSIFFLAGS = 0x1, 0x8913, 0x8914
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    request = struct.pack("16sH", b"lo", 0)
    flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
import signal
print("ready", flush=True)
while True:
    signal.pause()
"""


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


# Set in the environment of a testfleet that re-ran itself inside its own user namespace.
USERNS_VARIABLE = capabilities.USERNS_VARIABLE
CAP_SYS_ADMIN = 21
USERNS_ARGV = ["unshare", "--user", "--map-current-user", "--keep-caps", "--"]


def _has_sys_admin() -> bool:
    """Whether this process may make and enter network namespaces: root, or a process in a
    user namespace of its own (with the capabilities that namespace grants it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


def _user_namespaces_work() -> str | None:
    """None when this user may make a user namespace here, else the kernel's answer."""
    try:
        done = subprocess.run(
            [*USERNS_ARGV, "true"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def unavailable() -> str | None:
    """Why lanes cannot get namespaces here, or None when they can (as root, or as another
    user once testfleet runs in a user namespace of its own: see `needs_user_namespace`)."""
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare and nsenter are missing (apt-get install util-linux)"
    if os.geteuid() == 0:
        return None
    # Lanes shed what the user namespace grants (see capabilities.py).
    cannot_drop = capabilities.missing()
    if cannot_drop is not None:
        return cannot_drop
    if _has_sys_admin():
        return None
    refused = _user_namespaces_work()
    if refused is not None:
        return (
            f"this kernel does not let user {os.geteuid()} make a user namespace ({refused});"
            " allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1,"
            ' user.max_user_namespaces > 0) or run as root, or drop network = "namespace"'
        )
    return None


def needs_user_namespace() -> bool:
    """A user other than root, not yet in a user namespace of its own: testfleet re-runs
    itself in one (see `reexec_argv`) so it can make and enter the lanes' namespaces."""
    return os.geteuid() != 0 and not _has_sys_admin() and USERNS_VARIABLE not in os.environ


def reexec_argv(argv: Sequence[str]) -> list[str]:
    """This testfleet command again, in a user namespace where it keeps its own uid (files
    and processes stay the user's) and holds the capabilities that namespace grants, which
    its children (unshare, nsenter) keep too."""
    return [*USERNS_ARGV, sys.executable, "-m", "testfleet", *argv]


def check_available(where: str) -> None:
    reason = unavailable()
    if reason is not None:
        raise ConfigError(f'{where} = "namespace": {reason}')


class LaneNamespace:
    """One lane's network namespace, held by `holder_pid`."""

    def __init__(self, lane: int, holder_pid: int, holder: Handle | None = None) -> None:
        self.lane = lane
        self.holder_pid = holder_pid
        self._holder = holder
        self.path = f"/proc/{holder_pid}/ns/net"
        # Opened once: the path names the holder's namespace only while it lives, the fd
        # keeps naming it.
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._lock = threading.Lock()

    def wrap(
        self, argv: Sequence[str], *, uid: int | None = None, gid: int | None = None
    ) -> list[str]:
        """`argv` run inside the namespace, holding no more capabilities than its user does
        outside testfleet's own user namespace (see capabilities.py): entering needs them,
        the tests must not have them. Dropping to another user happens after entering
        (nsenter needs root to enter; the server must not run as root)."""
        prefix = ["nsenter", f"--net={self.path}"]
        if uid is not None:
            prefix += [f"--setuid={uid}", f"--setgid={gid if gid is not None else uid}"]
        return [*prefix, "--", *capabilities.as_the_user(argv)]

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread inside the namespace (sockets it opens live there) until the
        block ends."""
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        try:
            _setns(self._fd)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def call(self, task: Callable[[], T]) -> T:
        """`task` on a thread of its own that joins the namespace first and ends there. A
        thread cannot always come back: in a user namespace of its own, testfleet may enter
        the lanes' networks but not return to the one it started in."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def inside() -> None:
            try:
                _setns(self._fd)
                outcome.append(task())
            except BaseException as exc:  # handed to the caller, as if it ran there
                failure.append(exc)

        thread = threading.Thread(target=inside, name=f"lane {self.lane} network", daemon=True)
        thread.start()
        while thread.is_alive():  # in slices: a Ctrl-C meanwhile is handled at once
            thread.join(SLICE)
        if failure:
            raise failure[0]
        return outcome[0]

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def stop(self, supervisor: Supervisor) -> None:
        """End the namespace now, rather than with the run: its holder, and whatever a test
        left running in it (a daemon outside every process group the run knows)."""
        if self._fd >= 0:
            kill_inside([self._fd])
        self.close()
        if self._holder is not None:
            self._holder.stop()
            if isinstance(self._holder, ManagedProcess):
                supervisor.forget(self._holder)


def start_namespace(supervisor: Supervisor, folder: Path, lane: int) -> LaneNamespace:
    """A new namespace for `lane`, its loopback up, held by a supervised process."""
    from testfleet.readiness import log_line, wait_ready

    holder = supervisor.spawn(
        f"network namespace (lane {lane})",
        # -I -S: no site packages to import, a ~10 ms start instead of ~50.
        ["unshare", "--net", "--", sys.executable, "-I", "-S", "-c", HOLDER],
        log_path=folder / "namespace.log",
        # Nothing runs in it once the lane's servers are gone: no grace needed.
        stop_signal=signal.SIGKILL,
    )
    wait_ready(holder, log_line(holder, r"^ready"), timeout=HOLDER_SECONDS, what=holder.name)
    namespace = LaneNamespace(lane, holder.pid, holder)
    if os.stat(namespace.path).st_ino == os.stat("/proc/self/ns/net").st_ino:
        namespace.close()
        raise ServiceError(f"{holder.name}: unshare left it in testfleet's own network")
    # Recorded before anything runs in it, for the reaper after a SIGKILL of testfleet.
    supervisor.run_dir.record_namespace(holder.pid)
    return namespace
