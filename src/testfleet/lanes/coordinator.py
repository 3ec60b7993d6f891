"""The coordinator: runs lane processes and feeds them units from a queue per group (one
group per Python version of the matrix), slowest first.

What to run is injected (a `WorkSource` plans a group's units from its collection: all of
them, or one CI shard's share); what happened comes out as a frozen `RunOutcome` that the
reports and the exit code read. One thread, one selector loop: lane messages, lane exits,
per-test and whole-run timeouts and progress are all handled in the same place, in the order
they happen. A lane that hangs past
the test timeout or dies is killed (its whole process group), its test reported, the rest of
its unit requeued, and a replacement lane started on the same services.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from testfleet.files import open_private
from testfleet.lanes.early import EarlyLane
from testfleet.lanes.outcome import GroupOutcome, LaneFacts, RunOutcome, ServiceProblem
from testfleet.plan import Unit, Work, WorkSource
from testfleet.processes import describe_exit
from testfleet.protocol import LineReader, Message, send
from testfleet.results import FAILING, TestResult

TICK_SECONDS = 0.05
LOG_TAIL_LINES = 20
# Failed tests whose predecessors are kept for rechecks (which recheck at most 20).
MAX_PREDECESSOR_LISTS = 50
FAULT_LINES = 40


@dataclass
class Group:
    """One Python version's share of the run: its own collection, queue and results."""

    label: str
    nodeids: list[str] | None = None  # collected by its first lane
    work: Work | None = None
    queue: deque[Unit] = field(default_factory=deque)
    results: dict[str, TestResult] = field(default_factory=dict)
    collect_errors: dict[str, str] = field(default_factory=dict)

    def ordered_results(self, why: str) -> list[TestResult]:
        """Exactly one result per test this group was to run, in collection order."""
        selected = set(self.work.selected) if self.work else set()
        return [
            self.results.get(nodeid)
            or TestResult(nodeid, "not run", message=f"not run: {why}", timed=False)
            for nodeid in self.nodeids or []
            if nodeid in selected
        ]


@dataclass
class LaneState:
    lane: int
    group: str = ""
    process: subprocess.Popen[bytes] | None = None
    conn: socket.socket | None = None
    log_path: Path | None = None
    collected: bool = False
    assigned: list[str] = field(default_factory=list)  # handed out, no result yet
    current: str | None = None
    started_at: float = 0.0
    spawned_at: float = 0.0
    busy: float = 0.0  # sum of the durations of the tests it ran
    wall: float = 0.0  # time its processes were alive
    startup: float = 0.0  # spawn to collection reported (the first process only)
    tests: int = 0
    restarts: int = 0
    # What this lane's current process ran, in order: what ran before a test that failed.
    history: list[str] = field(default_factory=list)

    def log_tail(self) -> str:
        """The end of the lane's output; a Python fault dump (faulthandler) when there is one,
        since it names the test's own frames where the tail shows only pytest's."""
        if self.log_path is None:
            return ""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for index in range(len(lines) - 1, -1, -1):
            # pytest's progress dots may share the line: ".Fatal Python error: ..."
            start = lines[index].find("Fatal Python error")
            if start >= 0:
                return "\n".join([lines[index][start:], *lines[index + 1 : index + FAULT_LINES]])
        return "\n".join(lines[-LOG_TAIL_LINES:])


class Progress(Protocol):
    def update(self, coordinator: Coordinator) -> None: ...

    def close(self, coordinator: Coordinator) -> None: ...


@dataclass
class LaneLaunch:
    """How to start lane N: its argv, its env, where its output goes."""

    argv: Callable[[int], Sequence[str]]
    env: Callable[[int], Mapping[str, str]]
    log_path: Callable[[int], Path | None]  # None: the terminal (one lane, interactive)
    cwd: Path
    foreground: bool = False  # give the lane the terminal (for --pdb with one lane)
    # Told every lane pid as soon as it exists, so the run's reaper and the next run's stale
    # cleanup can stop a lane that outlives a killed testfleet.
    on_spawn: Callable[[int], None] = lambda pid: None
    # Which group (Python version) lane N belongs to.
    group: Callable[[int], str] = lambda lane: ""
    # Lane N's process when it was started before its services (handed over at its spawn).
    early: Callable[[int], EarlyLane | None] = lambda lane: None


class Coordinator:
    def __init__(
        self,
        launch: LaneLaunch,
        lanes: int,
        socket_path: Path,
        *,
        work: WorkSource,
        test_timeout: float | None,
        deadline: float | None,
        progress: Progress,
        max_restarts: int = 3,
        watch: Callable[[], ServiceProblem | None] | None = None,
    ) -> None:
        self.launch = launch
        self.socket_path = socket_path
        self.work = work
        self.test_timeout = test_timeout
        self.deadline = deadline
        self.progress = progress
        self.max_restarts = max_restarts
        self.watch = watch
        self.notices: list[str] = []  # said once each, after the run
        self.predecessors: dict[tuple[str, str], tuple[str, ...]] = {}
        self.lanes = {n: LaneState(n, launch.group(n)) for n in range(1, lanes + 1)}
        self.groups = {s.group: Group(s.group) for s in self.lanes.values()}
        self.stopping: str | None = None  # -x / --maxfail in some lane: hand out no more
        self.fatal: str | None = None  # a lane could not even collect: nothing can run
        self.fatal_details = ""
        self.fatal_code = 0
        self.timed_out = False
        self.interrupted = False
        self.began = time.monotonic()
        self.first_result_at: float | None = None
        self._selector = selectors.DefaultSelector()
        self._readers: dict[socket.socket, LineReader] = {}
        self._conn_lane: dict[socket.socket, LaneState] = {}

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(64)
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ)
        try:
            for state in self.lanes.values():
                self._spawn(state)
            while any(s.process is not None for s in self.lanes.values()):
                for key, _ in self._selector.select(TICK_SECONDS):
                    if key.data == "exit":  # a lane ended: seen below, without a tick's wait
                        self._selector.unregister(key.fileobj)
                        os.close(key.fd)
                    elif key.fileobj is listener:
                        conn, _ = listener.accept()
                        self._readers[conn] = LineReader()
                        self._selector.register(conn, selectors.EVENT_READ)
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                self._check_services()
                self._check_exits()
                self._check_time()
                self.progress.update(self)
        except BaseException:
            self.interrupted = True
            for state in self.lanes.values():
                self._abandon_current(state, "interrupted while this test ran")
            raise
        finally:
            for state in self.lanes.values():
                self._kill(state)
            for key in list(self._selector.get_map().values()):
                if key.data == "exit":
                    os.close(key.fd)
            self._selector.close()
            listener.close()
            for conn in list(self._readers):
                conn.close()
            self.progress.close(self)

    def _spawn(self, state: LaneState) -> None:
        launch = self.launch
        log_path = launch.log_path(state.lane)
        output: Any = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            output = os.fdopen(open_private(log_path), "ab")
        state.log_path = log_path
        try:
            state.process = self._hand_over(state.lane, output)
            if state.process is None:
                state.process = subprocess.Popen(
                    list(launch.argv(state.lane)),
                    cwd=launch.cwd,
                    env=dict(launch.env(state.lane)),
                    stdin=None if launch.foreground else subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT if output is not None else None,
                    # Its own process group: ending a lane ends what its tests forked too.
                    preexec_fn=os.setpgrp,  # noqa: PLW1509 - spawned from the main thread only
                )
        finally:
            if output is not None:
                output.close()
        launch.on_spawn(state.process.pid)
        with contextlib.suppress(AttributeError, OSError):  # Linux 5.3+: woken by its exit
            self._selector.register(os.pidfd_open(state.process.pid), selectors.EVENT_READ, "exit")
        if launch.foreground:
            _give_terminal(state.process.pid)
        state.spawned_at = time.monotonic()
        state.collected = False
        state.current = None
        state.history = []  # a new process: what ran before in the old one is gone

    def _hand_over(self, lane: int, output: Any) -> subprocess.Popen[bytes] | None:
        """Lane `lane`'s early process, told what to run (None: there is none, or it died)."""
        early = self.launch.early(lane)
        if early is None:
            return None
        launch = self.launch
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            out, err = (output.fileno(), output.fileno()) if output is not None else (1, 2)
            stdio = (0 if launch.foreground else devnull, out, err)
            argv = list(launch.argv(lane))
            if argv[1:3] != ["-m", "pytest"]:  # wrapped (nsenter): started the usual way
                early.discard()
                return None
            # The early lane already runs Python: it is handed pytest's own arguments.
            return early.hand_over(argv[3:], launch.env(lane), str(launch.cwd), stdio)
        finally:
            os.close(devnull)

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._forget(conn)
            return
        for message in self._readers[conn].feed(data):
            self._handle(conn, message)

    def _forget(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        self._readers.pop(conn, None)
        state = self._conn_lane.pop(conn, None)
        if state is not None and state.conn is conn:
            state.conn = None
        conn.close()

    # -- messages ------------------------------------------------------------------------------

    def _handle(self, conn: socket.socket, message: Message) -> None:
        kind = message["type"]
        if kind == "hello":
            state = self.lanes.get(int(message["lane"]))
            if state is None or state.process is None or state.process.pid != message["pid"]:
                self._forget(conn)  # a lane we already gave up on
                return
            state.conn = conn
            self._conn_lane[conn] = state
            return
        state = self._conn_lane.get(conn)
        if state is None:
            return
        if kind == "collected":
            self._on_collected(state, message["nodeids"])
        elif kind == "collect_error":
            self.groups[state.group].collect_errors.setdefault(message["nodeid"], message["text"])
        elif kind == "next":
            self._hand_out(state, conn)
        elif kind == "start":
            state.current = message["nodeid"]
            state.started_at = time.monotonic()
        elif kind == "result":
            self._on_result(state, message)
        elif kind == "stopping":
            self.stopping = message["reason"]
        elif kind == "notice":
            self._notice(message["text"])

    def _notice(self, text: str) -> None:
        if text not in self.notices:
            self.notices.append(text)

    def _on_collected(self, state: LaneState, nodeids: list[str]) -> None:
        state.collected = True
        if not state.restarts:
            state.startup = time.monotonic() - state.spawned_at
        group = self.groups[state.group]
        if group.nodeids is None:
            group.nodeids = nodeids
            group.work = self.work(group.label, nodeids)
            group.queue.extend(group.work.units)
            if group.work.notice:
                self._notice(group.work.notice)
        elif set(nodeids) != set(group.nodeids):
            ours, theirs = set(group.nodeids), set(nodeids)
            example = sorted(ours ^ theirs)[0]
            self._fail(
                f"lane {state.lane} collected {len(theirs)} tests where another lane collected"
                f" {len(ours)} (e.g. {example}); collection must not depend on the lane or on"
                " randomness",
                "",
                3,
            )

    def _hand_out(self, state: LaneState, conn: socket.socket) -> None:
        queue = self.groups[state.group].queue
        try:
            if self.stopping or self.fatal or not queue:
                send(conn, {"type": "done"})
                return
            unit = queue.popleft()
            state.assigned.extend(unit.nodeids)
            send(conn, {"type": "unit", "nodeids": list(unit.nodeids)})
        except OSError:
            # The lane died right after asking; what it was given is requeued when its exit
            # is seen.
            self._forget(conn)

    def _on_result(self, state: LaneState, message: Message) -> None:
        nodeid = message["nodeid"]
        if self.first_result_at is None:
            self.first_result_at = time.monotonic()
        self.groups[state.group].results[nodeid] = TestResult(
            nodeid=nodeid,
            outcome=message["outcome"],
            duration=float(message["duration"]),
            lane=state.lane,
            python=state.group,
            message=message.get("message", ""),
            text=message.get("text", ""),
            output=message.get("output", ""),
        )
        if message["outcome"] in FAILING:
            self._remember_predecessors(state, nodeid)
        state.history.append(nodeid)
        state.busy += float(message["duration"])
        state.tests += 1
        with contextlib.suppress(ValueError):
            state.assigned.remove(nodeid)
        if state.current == nodeid:
            state.current = None

    def _remember_predecessors(self, state: LaneState, nodeid: str) -> None:
        """What ran before a failed test in its lane's process, for rechecks (which look at
        the first few failures only: a suite that fails wholesale is not stored N times)."""
        if len(self.predecessors) < MAX_PREDECESSOR_LISTS:
            self.predecessors[(state.group, nodeid)] = tuple(state.history)

    # -- faults --------------------------------------------------------------------------------

    def _check_time(self) -> None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline and not self.timed_out:
            self.timed_out = True
            for state in self.lanes.values():
                self._abandon_current(state, "the run timed out while this test ran")
                self._kill(state)
            return
        if self.test_timeout is None:
            return
        for state in self.lanes.values():
            if state.current is not None and now - state.started_at > self.test_timeout:
                nodeid = state.current
                self.groups[state.group].results[nodeid] = TestResult(
                    nodeid=nodeid,
                    outcome="failed",
                    duration=now - state.started_at,
                    lane=state.lane,
                    python=state.group,
                    message=f"timed out after {self.test_timeout:g} s",
                    text=f"timed out after {self.test_timeout:g} s; lane {state.lane} was"
                    " killed and replaced\n\nlane output:\n" + state.log_tail(),
                )
                self._remember_predecessors(state, nodeid)
                state.assigned.remove(nodeid)
                state.current = None
                state.busy += now - state.started_at
                state.tests += 1
                self._kill(state, keep_state=True)

    def _check_exits(self) -> None:
        for state in self.lanes.values():
            process = state.process
            if process is None or process.poll() is None:
                continue
            code = process.returncode
            # What the lane sent before it died is still in the socket: read it first.
            self._kill(state, keep_state=True)
            self._drain(state)
            state.process = None
            state.wall += time.monotonic() - state.spawned_at
            if self.launch.foreground:
                _take_terminal_back()
            self._after_exit(state, code)

    def _check_services(self) -> None:
        if self.watch is None or self.fatal:
            return
        problem = self.watch()
        if problem is not None:
            for state in self.lanes.values():
                self._abandon_current(state, problem.what)
            self._fail(problem.message, problem.details, 3)

    def _abandon_current(self, state: LaneState, why: str) -> None:
        """The test a lane was running when the run stopped under it: an error, never "not
        run", since it did run (and may be why the run stopped)."""
        nodeid = state.current
        results = self.groups[state.group].results
        if nodeid is None or nodeid in results:
            return
        took = time.monotonic() - state.started_at
        results[nodeid] = TestResult(
            nodeid=nodeid,
            outcome="error",
            duration=took,
            lane=state.lane,
            python=state.group,
            message=f"{why} (after {took:.1f} s)",
            text=f"{why} (after {took:.1f} s)\n\nlane output:\n" + state.log_tail(),
            timed=False,
        )
        with contextlib.suppress(ValueError):
            state.assigned.remove(nodeid)
        state.current = None
        state.busy += took
        state.tests += 1

    def _after_exit(self, state: LaneState, code: int) -> None:
        if self.timed_out or self.interrupted or self.fatal:
            return
        if code == 2 and self.launch.foreground and state.collected:
            self.interrupted = True  # Ctrl-C reached the interactive lane, which owns the tty
            self._abandon_current(state, "interrupted while this test ran")
            return
        group = self.groups[state.group]
        if not state.collected:
            if group.collect_errors:
                return  # reported with the results; every lane would fail the same way
            self._fail(
                f"lane {state.lane} exited with code {code} before collecting tests",
                state.log_tail(),
                2 if code == 4 else 3,
            )
            return
        if state.current is not None:
            nodeid = state.current
            self._remember_predecessors(state, nodeid)
            group.results[nodeid] = TestResult(
                nodeid=nodeid,
                outcome="error",
                lane=state.lane,
                python=state.group,
                duration=time.monotonic() - state.started_at,
                message=f"lane {state.lane} crashed ({describe_exit(code)}) while running"
                " this test",
                timed=False,
                text="lane output:\n" + state.log_tail(),
            )
            state.assigned.remove(nodeid)
            state.current = None
            state.busy += group.results[nodeid].duration
            state.tests += 1
        if state.assigned:
            # Unfinished work goes back to the queue, first in line: it is already late.
            group.queue.appendleft(
                Unit(f"requeued from lane {state.lane}", tuple(state.assigned), 0.0)
            )
            state.assigned.clear()
        if group.collect_errors and not state.tests:
            return  # it stopped on collection errors; a new lane would only do it again
        if group.queue and not self.stopping and state.restarts < self.max_restarts:
            state.restarts += 1
            self._spawn(state)

    def _drain(self, state: LaneState) -> None:
        conn = state.conn
        if conn is None:
            return
        conn.setblocking(False)
        while True:
            try:
                data = conn.recv(1 << 16)
            except (BlockingIOError, OSError):
                data = b""
            if not data:
                break
            for message in self._readers[conn].feed(data):
                self._handle(conn, message)
        self._forget(conn)

    def _fail(self, message: str, details: str, code: int) -> None:
        if self.fatal is None:
            self.fatal, self.fatal_details, self.fatal_code = message, details, code
        for state in self.lanes.values():
            self._kill(state, keep_state=True)

    def _kill(self, state: LaneState, *, keep_state: bool = False) -> None:
        process = state.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if not keep_state:
            state.wall += time.monotonic() - state.spawned_at
            state.process = None
            if self.launch.foreground:
                _take_terminal_back()

    # -- what the reports need -------------------------------------------------------------------

    def outcome(self) -> RunOutcome:
        """The run as it stands, frozen: also after an interrupt, for the reports."""
        why = (
            "the run timed out"
            if self.timed_out
            else "interrupted"
            if self.interrupted
            else f"stopped early: {self.stopping}"
            if self.stopping
            else self.fatal or "its lane ended before running it"
        )
        groups = tuple(
            GroupOutcome(
                label=g.label,
                collected=tuple(g.nodeids) if g.nodeids is not None else None,
                selected=g.work.selected if g.work else (),
                results=tuple(g.ordered_results(why)),
                collect_errors=dict(g.collect_errors),
                unknown_durations=g.work.unknown_durations if g.work else 0,
                per_unknown=g.work.per_unknown if g.work else 0.0,
            )
            for g in self.groups.values()
        )
        lanes = tuple(
            LaneFacts(s.lane, s.group, s.busy, s.wall, s.startup, s.tests, s.restarts)
            for s in self.lanes.values()
        )
        return RunOutcome(
            groups=groups,
            lanes=lanes,
            timed_out=self.timed_out,
            interrupted=self.interrupted,
            stopping=self.stopping,
            fatal=self.fatal,
            fatal_details=self.fatal_details,
            fatal_code=self.fatal_code,
            notices=tuple(self.notices),
            predecessors=dict(self.predecessors),
            first_result_at=self.first_result_at,
        )

    def counts(self) -> tuple[int, int, int]:
        """Tests done, tests to run, failures so far: for progress."""
        done = sum(len(g.results) for g in self.groups.values())
        total = sum(len(g.work.selected) for g in self.groups.values() if g.work)
        failed = sum(1 for g in self.groups.values() for r in g.results.values() if r.failing)
        return done, total, failed


def _give_terminal(pgid: int) -> None:
    """One interactive lane owns the terminal, so `--pdb` can read from it."""
    with contextlib.suppress(OSError):
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(0, pgid)
        finally:
            signal.signal(signal.SIGTTOU, old)


def _take_terminal_back() -> None:
    with contextlib.suppress(OSError):
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(0, os.getpgrp())
        finally:
            signal.signal(signal.SIGTTOU, old)
