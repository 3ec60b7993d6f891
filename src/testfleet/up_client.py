"""`testfleet run` using a running `testfleet up`'s services (see up_server.py).

`SharedStack` stands where a run's own `Stack` would: lanes are leased from the up instead
of provisioned here, and released to it. Everything else is the run's own: its run directory,
lanes, reports. If the up goes away or a service of it dies, the run is told like it would be
of its own stack's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from testfleet.config import Project
from testfleet.coordinator import ServiceProblem
from testfleet.errors import ServiceError
from testfleet.protocol import LineReader, Message, send
from testfleet.rundir import process_start_ticks
from testfleet.runtime import Run
from testfleet.service import ServiceView
from testfleet.shared_stack import (
    PROTOCOL_VERSION,
    descriptor_path,
    differences,
    identity,
    not_shareable,
    read_descriptor,
)
from testfleet.stack import LaneEnv, expand_lane_args, lane_environment

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


class SharedStack:
    """The run's lanes, leased from a running `testfleet up`."""

    def __init__(self, project: Project, run: Run, connection: Connection, lanes: int) -> None:
        self.project = project
        self.run = run
        self.connection = connection
        self.lanes = lanes
        self.timings: dict[str, float] = {}

    def start(self) -> None:
        """The up started the services."""

    def provision(self, lane: int) -> LaneEnv:
        answer = self.connection.ask(
            {"type": "lease", "lane": lane}, timeout=LEASE_TIMEOUT_SECONDS, lane=lane
        )
        if answer["type"] != "lane":
            raise ServiceError(f"the running `testfleet up` gave no lane: {answer.get('message')}")
        views = {
            name: ServiceView(name, view["kind"], view["values"])
            for name, view in answer["views"].items()
        }
        # Its services are the up's lane's; everything else in its env (the `env` table's
        # placeholders, TESTFLEET_*) is this run's, as with a stack of its own.
        env = lane_environment(self.project, views, self.common_values(lane), lanes=self.lanes)
        return LaneEnv(lane, views, env)

    def release(self, lane: int) -> None:
        self.connection.tell({"type": "release", "lane": lane})

    def note_process(self, pid: int) -> None:
        """A lane process of this run: if the run is killed, the up stops it before the lane
        goes to another run."""
        ticks = process_start_ticks(pid)
        if ticks is not None:
            self.connection.tell({"type": "pids", "pids": [[pid, ticks]]})

    def expand_args(self, args: Sequence[str], lane: LaneEnv) -> list[str]:
        return expand_lane_args(args, lane, self.common_values(lane.lane))

    def common_values(self, lane: int) -> dict[str, str]:
        return {
            "lane": str(lane),
            "lanes": str(self.lanes),
            "run_id": self.run.run_dir.run_id,
            "run_dir": str(self.run.run_dir.path),
            "project_dir": str(self.project.root),
        }

    def problem(self) -> ServiceProblem | None:
        return self.connection.poll()

    def stop(self) -> None:
        """The up recycles every lane this run held when the connection closes."""
        self.connection.close()


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
