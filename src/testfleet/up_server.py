"""`testfleet up` serving lanes to runs: a unix socket in the up's private run directory.

A run says hello with its stack identity and the number of lanes it needs, then leases
lanes one by one: a lane kept warm when there is one, else one provisioned there and then.
Every lane is the run's alone (its own database cloned from the template, its own servers),
as in a run's own stack. When the run releases a lane, or its connection closes (it ended,
crashed or was killed), the lane is recycled: its servers stop, its database is dropped, and
a fresh lane takes its place when it is one of those kept warm. When a service dies, every
connected run is told which, before the up stops.

Protocol (JSON lines, protocol.py): run -> up: hello {identity, lanes}; lease {lane};
release {lane}. up -> run: welcome {pid, run_id, warm} | refused {why}; lane {lane, views,
env} | error {message}; dead {what, log, details}.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from testfleet.config import Project, check_lanes
from testfleet.console import say
from testfleet.coordinator import ServiceProblem
from testfleet.errors import TestfleetError
from testfleet.files import private_dir, write_private
from testfleet.protocol import LineReader, Message, send
from testfleet.shared_stack import descriptor_path, differences, identity
from testfleet.stack import LaneEnv, Stack

DEV_LANE = 1  # the lane whose env `up` prints: the developer's, never leased


@dataclass
class Client:
    reader: LineReader = field(default_factory=LineReader)
    lanes: dict[int, int] = field(default_factory=dict)  # the run's lane -> ours
    welcomed: bool = False


def lane_message(lane: LaneEnv) -> Message:
    return {
        "type": "lane",
        "lane": lane.lane,
        "views": {
            name: {"kind": view.kind, "values": dict(view.values)}
            for name, view in lane.views.items()
        },
        "env": dict(lane.env),
    }


class UpServer:
    def __init__(self, project: Project, stack: Stack, *, warm: int, shareable: str | None):
        self.project = project
        self.stack = stack
        self.warm_target = warm
        # None, or why no run can share this stack (it is said to each run that asks).
        self.shareable = shareable
        self.identity = identity(project)
        self.free: dict[int, LaneEnv] = {}  # warm lanes nobody holds
        self.broken: set[int] = set()  # lane numbers that could not be recycled
        self.clients: dict[socket.socket, Client] = {}
        self.selector = selectors.DefaultSelector()
        folder = private_dir(stack.run.run_dir.path / "up")
        self.socket_path = folder / "up.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.socket_path))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.descriptor = descriptor_path(project)

    # -- lanes ---------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Provision the lanes kept warm (numbers after the developer's lane)."""
        for lane in range(DEV_LANE + 1, DEV_LANE + 1 + self.warm_target):
            self.free[lane] = self.stack.provision(lane)

    def _taken(self) -> set[int]:
        held = (m for c in self.clients.values() for m in c.lanes.values())
        return {DEV_LANE, *self.free, *self.broken, *held}

    def _lease(self) -> LaneEnv:
        if self.free:
            return self.free.pop(min(self.free))
        taken = self._taken()
        lane = next(n for n in range(DEV_LANE + 1, len(taken) + 2) if n not in taken)
        return self.stack.provision(lane)

    def _recycle(self, lane: int) -> None:
        try:
            self.stack.recycle(lane)
            if lane <= DEV_LANE + self.warm_target:
                self.free[lane] = self.stack.provision(lane)
        except Exception as exc:  # the stack still serves; this lane number is not reused
            self.broken.add(lane)
            say(f"lane {lane} could not be made fresh again ({type(exc).__name__}: {exc})")

    # -- serving -------------------------------------------------------------------------------

    def publish(self) -> None:
        """Runs find the up through its descriptor (private: the socket hands out secrets)."""
        document = {
            "pid": os.getpid(),
            "owner": f"TESTFLEET_RUN_ID={self.stack.run.run_dir.run_id}",
            "run_id": self.stack.run.run_dir.run_id,
            "socket": str(self.socket_path),
            "identity": self.identity,
            "warm": self.warm_target,
        }
        write_private(self.descriptor, json.dumps(document, indent=1))

    def serve(self, seconds: float, problem: Callable[[], ServiceProblem | None]) -> None:
        """Answer runs for up to `seconds`; a dead service is told to every run, then raised."""
        for key, _ in self.selector.select(seconds):
            if key.fileobj is self.listener:
                with contextlib.suppress(OSError):
                    conn, _ = self.listener.accept()
                    self.clients[conn] = Client()
                    self.selector.register(conn, selectors.EVENT_READ)
            else:
                self._read(key.fileobj)  # type: ignore[arg-type]
        found = problem()
        if found is not None:
            for conn in list(self.clients):
                with contextlib.suppress(OSError):
                    message = {"what": found.what, "log": str(found.log), "details": found.details}
                    send(conn, {"type": "dead", **message})
            raise TestfleetError(found.message, details=found.details, exit_code=3)

    def _read(self, conn: socket.socket) -> None:
        client = self.clients[conn]
        try:
            data = conn.recv(1 << 16)
            messages = client.reader.feed(data) if data else []
        except (OSError, ValueError):
            data, messages = b"", []
        for message in messages:
            try:
                self._handle(conn, client, message)
            except OSError:
                data = b""
                break
        if not data:
            self._drop(conn)

    def _handle(self, conn: socket.socket, client: Client, message: Message) -> None:
        kind = message.get("type")
        if kind == "hello":
            why = self._refusal(message, client)
            if why is None:
                client.welcomed = True
                send(
                    conn,
                    {
                        "type": "welcome",
                        "pid": os.getpid(),
                        "run_id": self.stack.run.run_dir.run_id,
                        "warm": len(self.free),
                    },
                )
            else:
                send(conn, {"type": "refused", "why": why})
        elif kind == "lease" and client.welcomed:
            try:
                lane = self._lease()
            except Exception as exc:
                text = exc.message if isinstance(exc, TestfleetError) else f"{exc}"
                send(conn, {"type": "error", "message": f"providing a lane failed: {text}"})
                return
            client.lanes[int(message["lane"])] = lane.lane
            send(conn, lane_message(lane))
        elif kind == "release" and client.welcomed:
            ours = client.lanes.pop(int(message["lane"]), None)
            if ours is not None:
                self._recycle(ours)

    def _refusal(self, message: Message, client: Client) -> str | None:
        if self.shareable is not None:
            return self.shareable
        changed = differences(message.get("identity", {}), self.identity)
        if changed:
            return "its config differs in " + ", ".join(changed[:5])
        try:
            # Lanes held by every run, the developer's and the new run's: within the limits.
            check_lanes(self.project.config, len(self._taken()) + int(message.get("lanes", 1)))
        except TestfleetError as exc:
            return exc.message
        return None

    def _drop(self, conn: socket.socket) -> None:
        """A run that ended, or was killed: its lanes are recycled."""
        client = self.clients.pop(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn)
        conn.close()
        for ours in client.lanes.values():
            self._recycle(ours)

    def close(self) -> None:
        """The descriptor first: no run finds a stack that is stopping."""
        with contextlib.suppress(OSError):
            text = self.descriptor.read_text(encoding="utf-8")
            if self.identity and json.loads(text).get("socket") == str(self.socket_path):
                self.descriptor.unlink()
        for conn in list(self.clients):
            with contextlib.suppress(OSError):
                conn.close()
        self.clients.clear()
        self.selector.close()
        self.listener.close()
