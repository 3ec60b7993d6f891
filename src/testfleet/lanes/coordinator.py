"""The coordinator: runs lane processes and feeds them units from the lane queue (queue.py),
one queue per group (a Python version of the matrix).

What to run is injected (a `WorkSource` plans a group's units from its collection: all of
them, or one CI shard's share); `run()` returns what happened as a frozen `RunOutcome` that
the reports and the exit code read, also when an interrupt cut it short. One thread, one
selector loop: lane messages, lane exits, per-test and whole-run timeouts and progress are
all handled in the same place, in the order they happen. A lane that hangs past the test
timeout or dies is killed (its whole process group), its test reported, the rest of its unit
requeued, and a replacement lane started on the same services.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path

from testfleet.errors import Interrupted
from testfleet.lanes import lingering
from testfleet.lanes.affinity import Imported, busy, take
from testfleet.lanes.outcome import GroupOutcome, LaneFacts, RunOutcome, ServiceProblem
from testfleet.lanes.progress import Progress, Snapshot
from testfleet.lanes.queue import LaneQueue, Mismatch
from testfleet.lanes.spawn import LaneLaunch, kill, spawn, take_terminal_back
from testfleet.lanes.state import LaneState, overdue, timed_out
from testfleet.plan import WorkSource
from testfleet.processes import describe_exit
from testfleet.protocol import LineReader, Message, send
from testfleet.results import FAILING, TestResult

TICK_SECONDS = 0.05
# Failed tests whose predecessors are kept for rechecks (which recheck at most 20).
MAX_PREDECESSOR_LISTS = 50


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
        prefer_imported: bool = False,
        watch: Callable[[], ServiceProblem | None] | None = None,
        exit_grace: float = lingering.EXIT_GRACE_SECONDS,
        started: float | None = None,
    ) -> None:
        self.launch = launch
        self.socket_path = socket_path
        self.test_timeout = test_timeout
        self.deadline = deadline
        self.progress = progress
        self.watch = watch
        # Units of files a lane imported go to it first (not when units keep pytest's order).
        self.imported = Imported() if prefer_imported else None
        self.notices: list[str] = []  # said once each, after the run
        self.predecessors: dict[tuple[str, str], tuple[str, ...]] = {}
        self.lanes = {n: LaneState(n, launch.group(n)) for n in range(1, lanes + 1)}
        self.queue = LaneQueue(
            work, {n: s.group for n, s in self.lanes.items()}, max_restarts=max_restarts
        )
        self.results: dict[str, dict[str, TestResult]] = {g: {} for g in self.queue.groups}
        self.collect_errors: dict[str, dict[str, str]] = {g: {} for g in self.queue.groups}
        self.fatal: tuple[str, str, int] | None = None  # a lane could not even collect, ...
        self.timed_out = False
        self.interrupted = False
        # The interrupt (Ctrl-C, SIGTERM) that stopped the run, for the caller to raise again.
        self.interruption: BaseException | None = None
        # The command's start (time.monotonic()): progress counts from it, as the summary does.
        self.began = time.monotonic() if started is None else started
        self.exit_grace = exit_grace  # after its last test, for a lane to exit
        self.first_result_at: float | None = None
        self._selector = selectors.DefaultSelector()
        self._readers: dict[socket.socket, LineReader] = {}
        self._conn_lane: dict[socket.socket, LaneState] = {}

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        """Run every lane until the work is done (or the run stops); an interrupt (Ctrl-C,
        SIGTERM) stops the lanes and is kept in the outcome for the caller to raise again."""
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
                self._check_lingering()
                self._check_time()
                self.progress.update(self.snapshot)
        except (KeyboardInterrupt, Interrupted) as exc:
            self.interrupted, self.interruption = True, exc
            for state in self.lanes.values():
                self._abandon_current(state, "interrupted while this test ran")
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
            self.progress.close()
        return self.outcome()

    def _spawn(self, state: LaneState) -> None:
        state.log_path = self.launch.log_path(state.lane)
        state.process = spawn(self.launch, state.lane)
        with contextlib.suppress(AttributeError, OSError):  # Linux 5.3+: woken by its exit
            self._selector.register(os.pidfd_open(state.process.pid), selectors.EVENT_READ, "exit")
        state.spawned_at = time.monotonic()
        state.collected = False
        state.current = None
        state.done, state.idle_since = False, None
        state.history = []  # a new process: what ran before in the old one is gone
        if self.imported is not None:
            self.imported.forget(state.lane)

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
            if self.imported is not None:
                self.imported.add(
                    state.lane, message.get("files", ()), message.get("import_seconds", {})
                )
        elif kind == "collect_error":
            self.collect_errors[state.group].setdefault(message["nodeid"], message["text"])
        elif kind == "next":
            self._hand_out(state, conn)
        elif kind == "start":
            state.current = message["nodeid"]
            state.started_at = time.monotonic()
        elif kind == "result":
            self._on_result(state, message)
        elif kind == "stopping":
            self.queue.stop(message["reason"], state.lane)
            state.done = True  # it only ends now
        elif kind == "notice":
            self._notice(message["text"])

    def _notice(self, text: str | None) -> None:
        if text is not None and text not in self.notices:
            self.notices.append(text)

    def _on_collected(self, state: LaneState, nodeids: list[str]) -> None:
        state.collected = True
        if not self.queue.restarts[state.lane]:
            state.startup = time.monotonic() - state.spawned_at
        try:
            work = self.queue.collected(state.lane, nodeids)
        except Mismatch as exc:
            self._fail(str(exc), "", 3)
            return
        if work is not None and work.notice:
            self._notice(work.notice)

    def _hand_out(self, state: LaneState, conn: socket.socket) -> None:
        unit, waiting = take(self.imported, self.queue, state, lambda n: busy(self.lanes[n]))
        try:
            if waiting:
                send(conn, {"type": "wait"})
            elif unit is None:
                state.done = True
                send(conn, {"type": "done"})
            else:
                send(conn, {"type": "unit", "nodeids": list(unit.nodeids)})
        except OSError:
            # The lane died right after asking; what it was given is requeued when its exit
            # is seen.
            self._forget(conn)

    def _on_result(self, state: LaneState, message: Message) -> None:
        if self.first_result_at is None:
            self.first_result_at = time.monotonic()
        result = TestResult(
            nodeid=message["nodeid"],
            outcome=message["outcome"],
            duration=float(message["duration"]),
            lane=state.lane,
            python=state.group,
            message=message.get("message", ""),
            text=message.get("text", ""),
            output=message.get("output", ""),
            file=message.get("file", ""),
            line=message.get("line"),
        )
        self._settle(state, result)
        state.history.append(result.nodeid)

    def _settle(self, state: LaneState, result: TestResult, *, recheckable: bool = True) -> None:
        """A test of the lane has its result: from the lane, or ours when the lane could not
        say (a timeout, a crash, an interrupt). A test the run stopped under is not
        `recheckable`: what ran before it did not make it fail."""
        self.results[state.group][result.nodeid] = result
        if (
            recheckable
            and result.outcome in FAILING
            and len(self.predecessors) < MAX_PREDECESSOR_LISTS
        ):
            # What ran before it in its lane's process, for rechecks (which look at the
            # first few failures only: a suite that fails wholesale is not stored N times).
            self.predecessors[(state.group, result.nodeid)] = tuple(state.history)
        self.queue.finished(state.lane, result.nodeid)
        if state.current == result.nodeid:
            state.current = None
        state.busy += result.duration
        state.tests += 1

    # -- faults --------------------------------------------------------------------------------

    def _check_time(self) -> None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline and not self.timed_out:
            self.timed_out = True
            self.queue.halt()
            for state in self.lanes.values():
                self._notice(lingering.at_deadline(state, now))  # not a slow test: named
                self._abandon_current(state, "the run timed out while this test ran")
                self._kill(state)
            return
        if self.test_timeout is None:
            return
        for state in self.lanes.values():
            if state.current is not None and overdue(state.started_at, now, self.test_timeout):
                took = timed_out(self.test_timeout)
                self._settle(
                    state,
                    TestResult(
                        nodeid=state.current,
                        outcome="failed",
                        duration=now - state.started_at,
                        lane=state.lane,
                        python=state.group,
                        message=took,
                        text=f"{took}; lane {state.lane} was killed and replaced\n\nlane"
                        " output:\n" + state.log_tail(),
                    ),
                )
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
                take_terminal_back()
            self._after_exit(state, code)

    def _check_lingering(self) -> None:
        now = time.monotonic()
        for state in self.lanes.values():
            self._notice(lingering.check(state, self.queue.holds(state.lane), now, self.exit_grace))

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
        if nodeid is None or nodeid in self.results[state.group]:
            return
        took = time.monotonic() - state.started_at
        self._settle(
            state,
            TestResult(
                nodeid=nodeid,
                outcome="error",
                duration=took,
                lane=state.lane,
                python=state.group,
                message=f"{why} (after {took:.1f} s)",
                text=f"{why} (after {took:.1f} s)\n\nlane output:\n" + state.log_tail(),
                timed=False,
            ),
            recheckable=False,
        )

    def _after_exit(self, state: LaneState, code: int) -> None:
        if self.timed_out or self.interrupted or self.fatal:
            return
        if code == 2 and self.launch.foreground and state.collected:
            self.interrupted = True  # Ctrl-C reached the interactive lane, which owns the tty
            self._abandon_current(state, "interrupted while this test ran")
            return
        errors = self.collect_errors[state.group]
        if not state.collected:
            if errors:
                return  # reported with the results; every lane would fail the same way
            self._fail(
                f"lane {state.lane} exited with code {code} before collecting tests",
                state.log_tail(),
                2 if code == 4 else 3,
            )
            return
        if state.current is not None:
            self._settle(
                state,
                TestResult(
                    nodeid=state.current,
                    outcome="error",
                    lane=state.lane,
                    python=state.group,
                    duration=time.monotonic() - state.started_at,
                    message=f"lane {state.lane} crashed ({describe_exit(code)}) while running"
                    " this test",
                    timed=False,
                    text="lane output:\n" + state.log_tail(),
                ),
            )
        self.queue.give_back(state.lane)
        if errors and not state.tests:
            return  # it stopped on collection errors; a new lane would only do it again
        if self.queue.replace(state.lane):
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
            self.fatal = (message, details, code)
        self.queue.halt()
        for state in self.lanes.values():
            self._kill(state, keep_state=True)

    def _kill(self, state: LaneState, *, keep_state: bool = False) -> None:
        if state.process is None:
            return
        kill(state.process)
        if not keep_state:
            state.wall += time.monotonic() - state.spawned_at
            state.process = None
            if self.launch.foreground:
                take_terminal_back()

    # -- what progress and the reports read ------------------------------------------------------

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        groups = self.queue.groups
        return Snapshot(
            done=sum(len(results) for results in self.results.values()),
            total=sum(len(g.work.selected) for g in groups.values() if g.work),
            failed=sum(1 for rs in self.results.values() for r in rs.values() if r.failing),
            elapsed=now - self.began,
            lanes=tuple((state.lane, state.doing(now)) for state in self.lanes.values()),
        )

    def outcome(self) -> RunOutcome:
        """The run as it stands, frozen: also after an interrupt, for the reports."""
        stopping = self.queue.stopping
        why = (
            "the run timed out"
            if self.timed_out
            else "interrupted"
            if self.interrupted
            else f"stopped early: {stopping}"
            if stopping
            else (self.fatal[0] if self.fatal else "its lane ended before running it")
        )
        groups = tuple(
            GroupOutcome(
                label=label,
                collected=tuple(g.nodeids) if g.nodeids is not None else None,
                selected=g.work.selected if g.work else (),
                results=tuple(self._ordered_results(label, why)),
                collect_errors=dict(self.collect_errors[label]),
                unknown_durations=g.work.unknown_durations if g.work else 0,
                per_unknown=g.work.per_unknown if g.work else 0.0,
            )
            for label, g in self.queue.groups.items()
        )
        lanes = tuple(
            LaneFacts(
                s.lane, s.group, s.busy, s.wall, s.startup, s.tests, self.queue.restarts[s.lane]
            )
            for s in self.lanes.values()
        )
        message, details, code = self.fatal or (None, "", 0)
        return RunOutcome(
            groups=groups,
            lanes=lanes,
            timed_out=self.timed_out,
            interrupted=self.interrupted,
            stopping=stopping,
            fatal=message,
            fatal_details=details,
            fatal_code=code,
            notices=tuple(self.notices),
            predecessors=dict(self.predecessors),
            first_result_at=self.first_result_at,
            interruption=self.interruption,
        )

    def _ordered_results(self, label: str, why: str) -> list[TestResult]:
        """Exactly one result per test the group was to run, in collection order."""
        group = self.queue.groups[label]
        selected = set(group.work.selected) if group.work else set()
        results = self.results[label]
        return [
            results.get(nodeid)
            or TestResult(nodeid, "not run", message=f"not run: {why}", timed=False)
            for nodeid in group.nodeids or []
            if nodeid in selected
        ]
