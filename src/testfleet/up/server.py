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

A run's hello sets aside as many lane numbers as it says it needs, checked against what the
services allow (Valkey's 16 DB numbers) together with every other run's, in one step: a run
that would not fit is refused at hello and starts its own stack, rather than failing at a
lease. A lease within what was set aside is answered, at the latest when a lane being made
or recycled is done. What one connection may cost the up is bounded (up/connections.py), and
the processes a run names are stopped only when they are its lanes (up/lane_processes.py).

Protocol (JSON lines, protocol.py): run -> up: hello {version, identity, lanes}; lease
{lane}; release {lane}; pids {pids: [[pid, start ticks]]}. up -> run: welcome {pid, run_id,
warm} | refused {why}; lane {lane, views} | error {message}; dead {what, log, details}.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from testfleet.config import Config
from testfleet.config_rules import check_lanes
from testfleet.console import say
from testfleet.errors import ConfigError, TestfleetError
from testfleet.files import private_dir, write_private
from testfleet.lanes.outcome import ServiceProblem
from testfleet.project import Project
from testfleet.protocol import Message, whole_number
from testfleet.stack import LaneSetup, Stack, problem_of
from testfleet.up import lane_processes
from testfleet.up.connections import MAX_CONNECTIONS, Client, Doorway, open_client, turn_away
from testfleet.up.identity import PROTOCOL_VERSION, descriptor_path, differences, identity

DEV_LANE = 1  # the lane whose env `up` prints: the developer's, never leased
WORKERS = 4
# Lane numbers looked at for what the services allow; past it, as good as no limit.
LANE_NUMBERS = 4096
# The most lane processes one pids message names (a run names one at a time).
MAX_PIDS = 64


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


def lane_limit(config: Config) -> int:
    """The most lanes the services allow (Valkey's DB numbers, a fixed port: one)."""

    def allowed(lanes: int) -> bool:
        try:
            check_lanes(config, lanes)
        except ConfigError:
            return False
        return True

    low, high = DEV_LANE, LANE_NUMBERS + 1  # the up serves its own lane; the rest is found
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if allowed(middle) else (low, middle)
    return low


class UpServer:
    def __init__(self, project: Project, stack: Stack, *, warm: int, shareable: str | None):
        self.project = project
        self.stack = stack
        self.warm_target = warm
        # None, or why no run can share this stack (it is said to each run that asks).
        self.shareable = shareable
        self.identity = identity(project)
        self.limit = lane_limit(project.config)
        self.lock = threading.Lock()  # guards the lane sets, the clients and their lanes
        self.free: dict[int, LaneSetup] = {}  # warm lanes nobody holds
        self.busy: set[int] = set()  # lane numbers being provisioned or recycled
        self.providing: set[int] = set()  # busy: being made for a run (_provide owns them)
        self.dirty: set[int] = set()  # busy, and a server of theirs died meanwhile
        self.broken: set[int] = set()  # lane numbers that could not be recycled
        # Leases that found no lane and no lane number free: served, in order, as lanes
        # being made or recycled are done.
        self.waiting: list[tuple[Client, int]] = []
        # Dead servers already dealt with (the objects are kept, so their ids stay theirs).
        self.reported: dict[int, object] = {}
        # What the developer's lane and every lane use: if one of these dies, the up stops.
        self.vital = {id(h): h for h in stack.handles()}
        self.clients: dict[socket.socket, Client] = {}
        self.crowded = False  # connections are being turned away (said once)
        self.closing = False
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="testfleet-lane")
        self.selector = selectors.DefaultSelector()
        folder = private_dir(stack.run.run_dir.path / "up")
        self.socket_path = folder / "up.sock"
        self.doorway = Doorway(self.socket_path, self.selector)
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
                lane_processes.stop(pids)
                self.stack.recycle(recycle)
            env = self.stack.provision(lane) if lane <= DEV_LANE + self.warm_target else None
        except Exception as exc:  # the stack still serves; this lane number is not used again
            with self.lock:
                self.busy.discard(lane)
                self.dirty.discard(lane)
                self.broken.add(lane)
            if not self.closing:
                say(f"lane {lane} could not be made fresh ({type(exc).__name__}: {exc})")
            self._hand_out()  # a lease that waited for it waits no more
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
        else:
            self._hand_out()

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

    def _hand_out(self) -> None:
        """Serve the leases waiting, in order: a warm lane, else a free lane number within
        what the services allow (made on a worker thread). One that finds neither waits for
        a lane being made or recycled; with none, nothing comes free and it is told so."""
        answers: list[tuple[Client, Message]] = []
        made: list[tuple[Client, int, int]] = []
        with self.lock:
            while self.waiting and not self.closing:
                client, theirs = self.waiting[0]
                if client.conn not in self.clients:
                    self.waiting.pop(0)
                    continue
                if self.free:
                    lane = min(self.free)
                    client.lanes[theirs] = lane
                    answers.append((client, lane_message(self.free.pop(lane), theirs)))
                else:
                    taken = self._taken()
                    lane = next(n for n in range(DEV_LANE + 1, len(taken) + 2) if n not in taken)
                    if lane > self.limit:
                        if self.busy - self.providing:
                            break  # a lane being recycled or made warm comes free
                        answers.append((client, self._no_room(theirs)))
                    else:
                        self.busy.add(lane)
                        self.providing.add(lane)
                        client.lanes[theirs] = lane
                        made.append((client, theirs, lane))
                self.waiting.pop(0)
        for client, message in answers:
            client.tell(message)
        for client, theirs, lane in made:
            self.pool.submit(self._provide, client, theirs, lane)

    def _no_room(self, theirs: int) -> Message:
        return {
            "type": "error",
            "for": theirs,
            "message": f"every one of the {self.limit} lanes the services allow is taken"
            f" (lanes that could not be recycled: {len(self.broken)})",
        }

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
        """Answer runs for up to `seconds`, then drop what broke a bound and look for
        servers that died."""
        for key, _ in self.selector.select(seconds):
            if key.fileobj is self.doorway.listener:
                self._accept()
            elif key.data.conn in self.clients:  # not dropped earlier in this round
                self._read(key.data)
        now = time.monotonic()
        for conn, client in list(self.clients.items()):
            why = client.failed if client.failed is not None else client.overdue(now)
            if why is not None:
                if why:
                    say(f"dropped a run's connection: {why}")
                self._drop(conn)
        self.doorway.resume(now)
        self._check_servers()

    def _accept(self) -> None:
        conn = self.doorway.accept(time.monotonic())
        if conn is None:
            return
        if len(self.clients) >= MAX_CONNECTIONS:
            if not self.crowded:
                say(
                    f"{MAX_CONNECTIONS} connections are open, the most it serves: new ones are"
                    " turned away until one closes"
                )
            self.crowded = True
            turn_away(conn, f"it serves {MAX_CONNECTIONS} connections already")
            return
        self.crowded = False
        client = open_client(conn)
        with self.lock:
            self.clients[conn] = client
        self.selector.register(conn, selectors.EVENT_READ, client)

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

    def _read(self, client: Client) -> None:
        try:
            data = client.conn.recv(1 << 16)
            for message in client.reader.feed(data) if data else []:
                if client.failed is not None:
                    break  # it is dropped: the rest goes unanswered
                self._handle(client, message)
        except Exception as exc:  # a run that speaks nonsense is dropped, not the stack
            if not isinstance(exc, OSError):
                why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                say(f"dropped a run's connection: {why}")
            data = b""
        if not data:
            self._drop(client.conn)
            return
        client.heard(time.monotonic())

    def _handle(self, client: Client, message: Message) -> None:
        kind = message["type"]
        if kind == "hello":
            if client.welcomed:
                raise ValueError("a second hello")
            why = self._admit(client, message)
            if why is not None:
                client.tell({"type": "refused", "why": why})
                return
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
            self._lease(client, whole_number(message.get("lane"), "a lease's lane", least=1))
        elif kind == "release":
            self._release(client, whole_number(message.get("lane"), "a release's lane", least=1))
        elif kind == "pids":
            self._note_pids(client, message.get("pids"))

    def _admit(self, client: Client, message: Message) -> str | None:
        """None when the run is welcome, with its lanes set aside; else why not."""
        if message.get("version") != PROTOCOL_VERSION:
            return "it is another version of testfleet; restart it"
        if self.shareable is not None:
            return self.shareable
        theirs = message.get("identity")
        changed = differences(theirs if isinstance(theirs, dict) else {}, self.identity)
        if changed:
            return "its config differs in " + ", ".join(changed[:5])
        lanes = whole_number(message.get("lanes", 1), "a hello's lanes", least=1)
        # Checked and set aside in one step: two runs saying hello at once cannot both count
        # the same lanes as theirs.
        with self.lock:
            held = DEV_LANE + len(self.broken) + sum(c.reserved for c in self._welcomed())
            if held + lanes > self.limit:
                return (
                    f"it has {max(self.limit - held, 0)} of the {self.limit} lanes the services"
                    f" allow left for runs, and this run needs {lanes}"
                )
            client.reserved = lanes
            client.welcomed = True
        return None

    def _welcomed(self) -> list[Client]:
        return [c for c in self.clients.values() if c.welcomed]

    def _lease(self, client: Client, theirs: int) -> None:
        with self.lock:
            wanted = len(client.lanes) + sum(c is client for c, _ in self.waiting)
            refusal = None
            if theirs in client.lanes or (client, theirs) in self.waiting:
                # A second lane under one number would leave the first held by nobody.
                refusal = f"lane {theirs} is leased already"
            elif wanted >= client.reserved:
                # More lanes at once than its hello said: one more, when one is left.
                held = DEV_LANE + len(self.broken) + sum(c.reserved for c in self._welcomed())
                if held >= self.limit:
                    refusal = f"it holds the {wanted} lane(s) it asked for, and none is left"
                else:
                    client.reserved += 1
            if refusal is None:
                self.waiting.append((client, theirs))
        if refusal is not None:
            client.tell({"type": "error", "for": theirs, "message": refusal})
            return
        self._hand_out()

    def _release(self, client: Client, theirs: int) -> None:
        with self.lock:
            if (client, theirs) in self.waiting:
                self.waiting.remove((client, theirs))
            ours = client.lanes.pop(theirs, None)
            # A lane still being made is recycled by _provide, which sees it released.
            if ours is not None and ours in self.providing:
                ours = None
            if ours is not None:
                self.busy.add(ours)
        if ours is not None:
            self.pool.submit(self._fresh, ours, ours, ())

    def _note_pids(self, client: Client, named: object) -> None:
        """Lane processes the run started: stopped before their lane goes to another run,
        if the run goes first. Only its own (see lane_processes.py); the rest is said."""
        if not isinstance(named, list) or len(named) > MAX_PIDS:
            raise ValueError(f"pids is not a list of at most {MAX_PIDS} [pid, start] pairs")
        for pair in named:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError("pids is not a list of [pid, start] pairs")
            pid = whole_number(pair[0], "a pid")
            ticks = whole_number(pair[1], "a start time")
            why = lane_processes.refusal(pid, ticks, client.peer)
            if why is None:
                client.pids[pid, ticks] = None
            elif why != "gone":
                say(f"a run named process {pid} as its lane, but {why}: it is not stopped")

    def _drop(self, conn: socket.socket) -> None:
        """A run that ended, or was killed: its lanes are recycled once its lane processes
        are gone (a killed run's lanes may still be running tests)."""
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn)
        conn.close()
        with self.lock:
            client = self.clients.pop(conn)
            self.waiting = [(c, n) for c, n in self.waiting if c is not client]
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
        self.doorway.close()

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
