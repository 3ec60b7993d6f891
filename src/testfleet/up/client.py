"""A run's connection to a running `testfleet up` (see up/server.py): finding the up of the
project, saying hello with the run's stack identity, and asking for lanes (up/shared_stack.py
is the stack a run sees through it)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from pathlib import Path

from testfleet.errors import ServiceError
from testfleet.lanes.outcome import ServiceProblem
from testfleet.project import Project
from testfleet.protocol import LineReader, Message, send
from testfleet.up.identity import (
    PROTOCOL_VERSION,
    descriptor_path,
    differences,
    identity,
    not_shareable,
    read_descriptor,
)

HELLO_TIMEOUT_SECONDS = 5.0
# A lane is a few servers and a database clone; an up that takes longer is stuck (stopped in
# its terminal, say), and the run says so rather than waiting forever.
LEASE_TIMEOUT_SECONDS = 120.0


class Connection:
    """The socket to the up: requests and their answers, and what the up says unasked."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.reader = LineReader()
        self.lock = threading.Lock()
        self.pending: list[Message] = []
        self.problem: ServiceProblem | None = None
        self.welcome: Message = {}

    def ask(self, message: Message, timeout: float | None, *, lane: int | None = None) -> Message:
        """Send a request and wait for its answer (for a lease: the one for `lane`; a late
        answer to an earlier lease that timed out is dropped)."""
        with self.lock:
            try:
                send(self.sock, message)
                self.sock.settimeout(timeout)
                while True:
                    answer = self._next()
                    if answer is None:
                        raise ServiceError(self._gone())
                    if answer["type"] != "dead" and answer.get("for") == lane:
                        return answer
            except TimeoutError:
                raise ServiceError(
                    f"the running `testfleet up` (pid {self.pid}) did not answer within"
                    f" {timeout or 0:.0f} s"
                ) from None
            except OSError:
                raise ServiceError(self._gone()) from None

    def _next(self) -> Message | None:
        while not self.pending:
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self.pending.extend(self.reader.feed(data))
        message = self.pending.pop(0)
        if message["type"] == "dead":
            self.problem = ServiceProblem(
                f"{message['what']}, in the running `testfleet up` (pid {self.pid})",
                Path(message["log"]),
                message.get("details", ""),
            )
        return message

    def _gone(self) -> str:
        if self.problem is not None:
            return self.problem.message
        return f"the `testfleet up` (pid {self.pid}) whose stack this run uses stopped"

    def poll(self) -> ServiceProblem | None:
        """What the up said since the last look; its end is a problem too."""
        if self.problem is not None:
            return self.problem
        with self.lock:
            self.sock.settimeout(0)
            try:
                while self._next() is not None:
                    if self.problem is not None:
                        return self.problem
            except (BlockingIOError, TimeoutError):
                return None
            except OSError:
                pass
        self.problem = self.problem or ServiceProblem(self._gone(), None, "")
        return self.problem

    def tell(self, message: Message) -> None:
        """A message that needs no answer; an up that is gone is the watch's to report."""
        with self.lock, contextlib.suppress(OSError):
            self.sock.settimeout(HELLO_TIMEOUT_SECONDS)
            send(self.sock, message)

    def close(self) -> None:
        """Shut down first: a thread waiting for a lease wakes up (close alone leaves it)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def find_up(project: Project, lanes: int) -> tuple[Connection | None, str | None]:
    """The running up to use (and what it said), or None and why not (None when no up runs
    for this project, which needs no word)."""
    path = descriptor_path(project)
    document = read_descriptor(path)
    if document is None:
        return None, None
    pid = int(document.get("pid", 0))
    prefix = f"not using the running `testfleet up` (pid {pid}): "
    why = not_shareable(project)
    if why is not None:
        return None, prefix + why
    changed = differences(identity(project), document.get("identity", {}))
    if changed:
        return None, (
            prefix
            + "its config differs in "
            + ", ".join(changed[:5])
            + "; restart it to share its stack"
        )
    sock = _connect(Path(str(document.get("socket", ""))))
    if sock is None:
        return None, prefix + f"it is gone (stale {path})"
    connection = Connection(sock, pid)
    try:
        answer = connection.ask(
            {
                "type": "hello",
                "version": PROTOCOL_VERSION,
                "identity": identity(project),
                "lanes": lanes,
            },
            timeout=HELLO_TIMEOUT_SECONDS,
        )
    except (OSError, ServiceError):
        connection.close()
        return None, prefix + "it did not answer"
    if answer["type"] != "welcome":
        connection.close()
        return None, prefix + str(answer.get("why", "it refused"))
    connection.welcome = answer
    return connection, None


def _connect(path: Path) -> socket.socket | None:
    """Only a socket in a directory of this user's that nobody else can enter."""
    try:
        folder = os.stat(path.parent, follow_symlinks=False)
        if (
            not stat.S_ISDIR(folder.st_mode)
            or folder.st_uid != os.getuid()
            or folder.st_mode & 0o077
        ):
            return None
    except OSError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock
