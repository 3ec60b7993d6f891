"""`testfleet up` serving lanes to runs: a unix socket in the up's private run directory.

A run says hello with its stack identity and the number of lanes it needs, then leases
lanes one by one: a lane kept warm when there is one, else one provisioned there and then.
Every lane is the run's alone (its own database cloned from the template, its own servers),
as in a run's own stack. When the run releases a lane, or its connection closes (it ended,
crashed or was killed), the lane is recycled: the run's lane processes are stopped first,
then its servers, its database is dropped, and a fresh lane takes its place when it is one
of those kept warm. Provisioning and recycling happen on worker threads, so the up answers
the next run at once.

A server of a run's lane that dies is that run's problem alone: it is told, and the lane is
recycled. A server of the developer's lane or a shared server that dies stops the up (every
connected run is told first).

Protocol (JSON lines, protocol.py): run -> up: hello {version, identity, lanes}; lease
{lane}; release {lane}; pids {pids: [[pid, start ticks]]}. up -> run: welcome {pid, run_id,
warm} | refused {why}; lane {lane, views} | error {message}; dead {what, log, details}.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from testfleet.config_rules import check_lanes
from testfleet.console import say
from testfleet.errors import TestfleetError
from testfleet.files import private_dir, write_private
from testfleet.lanes.outcome import ServiceProblem
from testfleet.project import Project
from testfleet.protocol import LineReader, Message, send
from testfleet.rundir import process_start_ticks
from testfleet.stack import LaneSetup, Stack, problem_of
from testfleet.up.identity import PROTOCOL_VERSION, descriptor_path, differences, identity

DEV_LANE = 1  # the lane whose env `up` prints: the developer's, never leased
WORKERS = 4
# How long a killed run's lanes get to end before their lane is recycled under them.
LANE_EXIT_SECONDS = 5.0


@dataclass
class Client:
    conn: socket.socket
    reader: LineReader = field(default_factory=LineReader)
    lanes: dict[int, int] = field(default_factory=dict)  # the run's lane -> ours
    pids: list[tuple[int, int]] = field(default_factory=list)  # its lane processes
    welcomed: bool = False
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def tell(self, message: Message) -> None:
        with self.send_lock, contextlib.suppress(OSError):
            send(self.conn, message)


def lane_message(lane: LaneSetup, theirs: int) -> Message:
    """`for`: the run's number of the lane, so a late answer is never taken for another's."""
    return {
        "type": "lane",
        "for": theirs,
        "lane": lane.lane,
        "views": {
            name: {"kind": view.kind, "values": dict(view.values)}
            for name, view in lane.views.items()
        },
    }


class UpServer:
    def __init__(self, project: Project, stack: Stack, *, warm: int, shareable: str | None):
        self.project = project
        self.stack = stack
        self.warm_target = warm
        # None, or why no run can share this stack (it is said to each run that asks).
        self.shareable = shareable
        self.identity = identity(project)
        self.lock = threading.Lock()  # guards the lane sets and the clients' lanes
        self.free: dict[int, LaneSetup] = {}  # warm lanes nobody holds
        self.busy: set[int] = set()  # lane numbers being provisioned or recycled
        self.providing: set[int] = set()  # busy: being made for a run (_provide owns them)
        self.dirty: set[int] = set()  # busy, and a server of theirs died meanwhile
        self.broken: set[int] = set()  # lane numbers that could not be recycled
        # Dead servers already dealt with (the objects are kept, so their ids stay theirs).
        self.reported: dict[int, object] = {}
        # What the developer's lane and every lane use: if one of these dies, the up stops.
        self.vital = {id(h): h for h in stack.handles()}
        self.clients: dict[socket.socket, Client] = {}
        self.closing = False
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="testfleet-lane")
        self.selector = selectors.DefaultSelector()
        folder = private_dir(stack.run.run_dir.path / "up")
        self.socket_path = folder / "up.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.socket_path))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.descriptor = descriptor_path(project)

    # -- lanes (worker threads) ----------------------------------------------------------------

    def warm_up(self) -> None:
        """Provision the lanes kept warm (numbers after the developer's lane), in the
        background: a run that comes sooner gets lanes made for it."""
        for lane in range(DEV_LANE + 1, DEV_LANE + 1 + self.warm_target):
            self.busy.add(lane)
            self.pool.submit(self._fresh, lane, None, ())

    def _taken(self) -> set[int]:
        held = (m for c in self.clients.values() for m in c.lanes.values())
        return {DEV_LANE, *self.free, *self.busy, *self.broken, *held}

    def _fresh(self, lane: int, recycle: int | None, pids: tuple[tuple[int, int], ...]) -> None:
        """Recycle `recycle` (after the processes of the run that held it have ended) and
        make `lane` warm again when it is one of those kept warm."""
        try:
            if recycle is not None:
                _stop_processes(pids)
                self.stack.recycle(recycle)
            env = self.stack.provision(lane) if lane <= DEV_LANE + self.warm_target else None
        except Exception as exc:  # the stack still serves; this lane number is not used again
            with self.lock:
                self.busy.discard(lane)
                self.dirty.discard(lane)
                self.broken.add(lane)
            if not self.closing:
                say(f"lane {lane} could not be made fresh ({type(exc).__name__}: {exc})")
            return
        with self.lock:
            again = lane in self.dirty  # a server of it died while it was made: once more
            self.dirty.discard(lane)
            if not again:
                self.busy.discard(lane)
                if env is not None:
                    self.free[lane] = env
        if again and not self.closing:
            self.pool.submit(self._fresh, lane, lane, ())

    def _provide(self, client: Client, theirs: int, lane: int) -> None:
        """A lane made for a run that found none warm; recycled if the run has gone (a
        release or a drop leaves lanes being made to this)."""
        failure = None
        try:
            env = self.stack.provision(lane)
        except Exception as exc:
            failure = exc.message if isinstance(exc, TestfleetError) else str(exc)
        with self.lock:
            self.providing.discard(lane)
            if lane in self.dirty and failure is None:
                failure = "a server of it died while it was made"
            self.dirty.discard(lane)
            gone = client.conn not in self.clients or client.lanes.get(theirs) != lane
            if failure is None and not gone:
                self.busy.discard(lane)
            elif not gone:
                del client.lanes[theirs]
        if failure is None and not gone:
            client.tell(lane_message(env, theirs))
            return
        # What was made of it goes (it stays busy until then); then the number is free.
        self.pool.submit(self._fresh, lane, lane, ())
        if failure is not None and not gone:
            client.tell(
                {"type": "error", "for": theirs, "message": f"providing a lane failed: {failure}"}
            )

    # -- serving (the main thread) -------------------------------------------------------------

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

    def serve(self, seconds: float) -> None:
        """Answer runs for up to `seconds`, then look for servers that died."""
        for key, _ in self.selector.select(seconds):
            if key.fileobj is self.listener:
                with contextlib.suppress(OSError):
                    conn, _ = self.listener.accept()
                    self.clients[conn] = Client(conn)
                    self.selector.register(conn, selectors.EVENT_READ)
            else:
                self._read(key.fileobj)  # type: ignore[arg-type]
        self._check_servers()

    def _check_servers(self) -> None:
        for handle in self.stack.dead():
            if id(handle) in self.reported:
                continue
            problem = problem_of(handle)
            if id(handle) in self.vital:
                for client in list(self.clients.values()):
                    client.tell(_dead(problem))
                raise TestfleetError(problem.message, details=problem.details, exit_code=3)
            self.reported[id(handle)] = handle
            # A server of a run's lane, or of a lane being made or recycled (one that is
            # starting or stopping is no lane's any more, or not yet: nothing to do).
            lane = self.stack.lane_of(handle)
            if lane is None:
                continue
            with self.lock:
                owner = next((c for c in self.clients.values() if lane in c.lanes.values()), None)
                warm = self.free.pop(lane, None)
                if warm is not None:
                    self.busy.add(lane)
                elif lane in self.busy:
                    self.dirty.add(lane)
            if owner is not None:
                owner.tell(_dead(problem))
            if warm is not None:
                self.pool.submit(self._fresh, lane, lane, ())

    def _read(self, conn: socket.socket) -> None:
        client = self.clients[conn]
        try:
            data = conn.recv(1 << 16)
            for message in client.reader.feed(data) if data else []:
                self._handle(client, message)
        except Exception as exc:  # a run that speaks nonsense is dropped, not the stack
            if not isinstance(exc, OSError):
                say(f"dropped a run's connection: {type(exc).__name__}: {exc}")
            data = b""
        if not data:
            self._drop(conn)

    def _handle(self, client: Client, message: Message) -> None:
        kind = message["type"]
        if kind == "hello":
            why = self._refusal(message)
            if why is not None:
                client.tell({"type": "refused", "why": why})
                return
            client.welcomed = True
            client.tell(
                {
                    "type": "welcome",
                    "pid": os.getpid(),
                    "run_id": self.stack.run.run_dir.run_id,
                    "warm": len(self.free),
                }
            )
        elif not client.welcomed:
            raise ValueError(f"{kind} before hello")
        elif kind == "lease":
            self._lease(client, int(message["lane"]))
        elif kind == "release":
            with self.lock:
                ours = client.lanes.pop(int(message["lane"]), None)
                # A lane still being made is recycled by _provide, which sees it released.
                if ours is not None and ours in self.providing:
                    ours = None
                if ours is not None:
                    self.busy.add(ours)
            if ours is not None:
                self.pool.submit(self._fresh, ours, ours, ())
        elif kind == "pids":
            client.pids.extend((int(pid), int(ticks)) for pid, ticks in message["pids"])

    def _lease(self, client: Client, theirs: int) -> None:
        with self.lock:
            if self.free:
                lane = min(self.free)
                env = self.free.pop(lane)
                client.lanes[theirs] = lane
            else:
                taken = self._taken()
                lane = next(n for n in range(DEV_LANE + 1, len(taken) + 2) if n not in taken)
                env = None
        if env is not None:
            client.tell(lane_message(env, theirs))
            return
        try:
            # Every lane number within what the services allow (Valkey's DB numbers, ports).
            check_lanes(self.project.config, lane)
        except TestfleetError as exc:
            client.tell({"type": "error", "for": theirs, "message": exc.message})
            return
        with self.lock:
            self.busy.add(lane)
            self.providing.add(lane)
            client.lanes[theirs] = lane
        self.pool.submit(self._provide, client, theirs, lane)

    def _refusal(self, message: Message) -> str | None:
        if message.get("version") != PROTOCOL_VERSION:
            return "it is another version of testfleet; restart it"
        if self.shareable is not None:
            return self.shareable
        changed = differences(message.get("identity", {}), self.identity)
        if changed:
            return "its config differs in " + ", ".join(changed[:5])
        with self.lock:
            held = len(self._taken()) - len(self.free)  # the developer's and other runs' lanes
            free = len(self.free)
        try:
            # The new run takes the warm lanes first; all lane numbers stay within the limits.
            check_lanes(self.project.config, held + max(int(message.get("lanes", 1)), free))
        except TestfleetError as exc:
            return exc.message
        return None

    def _drop(self, conn: socket.socket) -> None:
        """A run that ended, or was killed: its lanes are recycled once its lane processes
        are gone (a killed run's lanes may still be running tests)."""
        client = self.clients.pop(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn)
        conn.close()
        with self.lock:
            # Lanes still being made are recycled by _provide, which sees the run gone.
            held = [m for m in client.lanes.values() if m not in self.providing]
            client.lanes.clear()
            self.busy.update(held)
        for ours in held:
            self.pool.submit(self._fresh, ours, ours, tuple(client.pids))

    def close(self) -> None:
        """The descriptor first: no run finds a stack that is stopping."""
        self.closing = True
        with contextlib.suppress(OSError, ValueError):
            text = self.descriptor.read_text(encoding="utf-8")
            if json.loads(text).get("socket") == str(self.socket_path):
                self.descriptor.unlink()
        for conn in list(self.clients):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.clients.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.selector.close()
        self.listener.close()

    def join_workers(self) -> None:
        """After the stack's teardown, which ends what running workers wait on (and starts
        nothing new): a worker halfway through stopping a lane's server finishes that."""
        self.pool.shutdown(wait=True)


def _dead(problem: ServiceProblem) -> Message:
    return {
        "type": "dead",
        "what": problem.what,
        "log": str(problem.log),
        "details": problem.details,
    }


def _stop_processes(pids: tuple[tuple[int, int], ...]) -> None:
    """A gone run's lanes (whole process groups), if they still run: they must not write into
    the lane's next database."""
    deadline = time.monotonic() + LANE_EXIT_SECONDS
    for pid, ticks in pids:
        while process_start_ticks(pid) == ticks and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_start_ticks(pid) == ticks:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
