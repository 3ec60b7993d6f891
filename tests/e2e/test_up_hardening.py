"""A running `testfleet up` against what a connection to it can do: name processes for it to
stop, ask for more lanes than the services have (also two runs at once), send a line without
end, open connections without end, stall mid-message, and leave it without file descriptors.
The up stops only a run's own lanes, and keeps serving runs through all of it."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import testfleet.up.connections as up_connections
from testfleet.protocol import LineReader, Message
from testfleet.rundir import process_start_ticks
from testfleet.up.identity import PROTOCOL_VERSION
from tests.helpers import alive, run_cli, wait_for, write_pyproject

pytestmark = pytest.mark.e2e

NO_SERVICES = "[tool.testfleet]\n"
# One Valkey server, a DB number per lane: 16 lanes at most, the up's own lane included.
VALKEY_DATABASES = '[tool.testfleet.services.valkey]\nisolation = "database"\n'
USING = "testfleet: using the stack of the running `testfleet up`"
NOT_USING = "not using the running `testfleet up`"
MIB = 1 << 20


@pytest.fixture(autouse=True)
def base(own_run_base: Path) -> Iterator[Path]:
    """Every testfleet here runs under the test's own base, which it leaves empty."""
    yield own_run_base
    wait_for(lambda: not any(own_run_base.iterdir()), timeout=30, what="the runs to clean up")


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    log: Path
    socket: str
    identity: dict[str, Any]

    @property
    def pid(self) -> int:
        return self.process.pid

    def said(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def running_up(project: Path, *args: str) -> Iterator[Up]:
    """A `testfleet up` in a session of its own (a signal meant for its group reaches nothing
    of the test's), serving until the block ends; its stderr goes to a file."""
    log = project / "up.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "testfleet", "up", *args],
            cwd=project,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stream,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "Ctrl-C stops the stack" in log.read_text() or process.poll() is not None,
            timeout=60,
            what="the up to serve",
        )
        assert process.poll() is None, log.read_text()
        descriptor = json.loads((project / ".testfleet" / ".env.up.json").read_text())
        yield Up(process, log, descriptor["socket"], descriptor["identity"])
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


class Peer:
    """A connection speaking the up's protocol by hand."""

    def __init__(self, path: str, *, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.reader = LineReader()
        self.pending: list[Message] = []

    def send(self, message: Message) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def answer(self) -> Message | None:
        """The next message; None when the up closed the connection."""
        while not self.pending:
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.pending.extend(self.reader.feed(data))
        return self.pending.pop(0)

    def ask(self, message: Message) -> Message:
        """Send a request; its answer (the connection must stay open)."""
        self.send(message)
        answer = self.answer()
        assert answer is not None, f"the up closed the connection after {message}"
        return answer

    def hello(self, up: Up, lanes: int = 1) -> Message | None:
        # A connection the up turns away is told so and closed at once: the hello may then
        # meet a closed socket, and the answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send(
                {
                    "type": "hello",
                    "version": PROTOCOL_VERSION,
                    "identity": up.identity,
                    "lanes": lanes,
                }
            )
        return self.answer()

    def close(self) -> None:
        self.sock.close()


Connect = Callable[..., Peer]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Connections to an up (`connect(up, timeout=...)`), closed however the test ends."""
    made: list[Peer] = []

    def make(up: Up, timeout: float = 10.0) -> Peer:
        made.append(Peer(up.socket, timeout=timeout))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (its peak) of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def cpu_seconds(pid: int) -> float:
    """User and system time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(project: Path) -> None:
    """A real `testfleet run` still gets its lanes from the up."""
    result = run_cli("run", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(USING), result.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = write_pyproject(tmp_path / "project", NO_SERVICES)
    (root / "test_a.py").write_text("def test_a(): pass\n")
    return root


# -- processes a run names ---------------------------------------------------------------------

# A fake run in a process of its own: it starts its lane (a process group of its own), leases
# a lane, names the processes of argv (pid and start time) and then its lane, and goes.
FAKE_RUN = """
import json, socket, subprocess, sys
from testfleet.rundir import process_start_ticks
path, identity, named = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
lane = subprocess.Popen(["sleep", "300"], start_new_session=True)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(30)
sock.connect(path)
def send(message):
    sock.sendall(json.dumps(message).encode() + b"\\n")
def answer():
    data = b""
    while not data.endswith(b"\\n"):
        chunk = sock.recv(65536)
        assert chunk, "the up closed the connection"
        data += chunk
    return json.loads(data)
send({"type": "hello", "version": 1, "identity": identity, "lanes": 1})
assert answer()["type"] == "welcome"
send({"type": "lease", "lane": 1})
assert answer()["type"] == "lane"
for pid, ticks in named:
    send({"type": "pids", "pids": [[pid, ticks]]})
send({"type": "pids", "pids": [[lane.pid, process_start_ticks(lane.pid)]]})
print(lane.pid, process_start_ticks(lane.pid), flush=True)
"""


def _named(which: str, unrelated: int) -> tuple[int, int]:
    pid = {"zero": 0, "one": 1, "the test": os.getpid(), "unrelated": unrelated}[which]
    return pid, process_start_ticks(pid) or 0


@pytest.mark.parametrize("which", ["zero", "one", "the test", "unrelated"])
def test_an_up_stops_only_the_lane_processes_of_the_run_that_goes(project: Path, which: str):
    """When a run goes, the up stops the lane process the run started and nothing else it named: not
    pid 0 or 1 (killpg(1) is kill(-1): every process), not the test, not a process of the
    test's; and it goes on serving."""
    unrelated = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        with running_up(project, "-n", "1") as up:
            named = _named(which, unrelated.pid)
            fake = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    FAKE_RUN,
                    up.socket,
                    json.dumps(up.identity),
                    json.dumps([named]),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert fake.returncode == 0, fake.stderr
            lane_pid, lane_ticks = map(int, fake.stdout.split())
            # The run is gone: its lane is stopped (it does not end by itself).
            wait_for(lambda: alive([(lane_pid, lane_ticks)]) == [], timeout=30, what="its lane")
            assert alive([(unrelated.pid, process_start_ticks(unrelated.pid) or 0)])
            assert up.process.poll() is None, up.said()
            if named[0] != 0:
                assert f"process {named[0]}" in up.said()
            served(project)
    finally:
        unrelated.kill()
        unrelated.wait()


# -- lanes the services have -------------------------------------------------------------------


@pytest.fixture
def valkey_project(tmp_path: Path) -> Path:
    return write_pyproject(tmp_path / "project", VALKEY_DATABASES)


def test_two_runs_saying_hello_at_once_get_no_more_lanes_than_there_are(
    valkey_project: Path, connect: Connect
):
    """The up's lane and 8 + 8 more are 17 of Valkey's 16 DB numbers: the first hello gets its
    lanes' numbers set aside, the second is told no before either leases any."""
    with running_up(valkey_project, "-n", "2") as up:
        first, second = connect(up), connect(up)
        for peer in (first, second):
            peer.send(
                {"type": "hello", "version": PROTOCOL_VERSION, "identity": up.identity, "lanes": 8}
            )
        answers = [first.answer(), second.answer()]
        assert [a and a["type"] for a in answers] == ["welcome", "refused"], answers
        assert "16" in str(answers[1]), answers
        # Once the first has gone, its lanes are the next run's.
        first.close()
        second.close()
        third = connect(up)
        wait_for(lambda: (third.hello(up, 8) or {}).get("type") == "welcome", timeout=30)


def test_a_lane_number_is_leased_once_and_again_after_its_release(
    valkey_project: Path, connect: Connect
):
    """Leasing a lane the run holds is refused (it used to leak the one held); a released lane
    can be leased again, and no two lanes held share a DB number."""
    with running_up(valkey_project, "-n", "2") as up:
        peer = connect(up)
        assert (peer.hello(up, 2) or {}).get("type") == "welcome"
        one = peer.ask({"type": "lease", "lane": 1})
        assert one["type"] == "lane", one
        again = peer.ask({"type": "lease", "lane": 1})
        assert again["type"] == "error", again
        assert "lane 1" in again["message"]
        two = peer.ask({"type": "lease", "lane": 2})
        assert two["type"] == "lane", two
        assert one["lane"] != two["lane"]
        peer.send({"type": "release", "lane": 1})
        fresh = peer.ask({"type": "lease", "lane": 1})
        assert fresh["type"] == "lane", fresh
        assert fresh["lane"] != two["lane"]


HOLD = """
import os, pathlib, time

def test_hold():
    # The run holds its lanes until the test says go.
    go = pathlib.Path(os.environ["GO"])
    deadline = time.monotonic() + 120
    while not go.exists():
        assert time.monotonic() < deadline, "no go"
        time.sleep(0.05)
"""


def test_a_run_past_the_lanes_another_run_was_promised_starts_its_own_stack(
    valkey_project: Path, tmp_path: Path, connect: Connect
):
    """A run that said hello for 8 lanes and has not leased them yet (it is still planning)
    holds them: a `testfleet run -n 8` beside it is told no at hello, starts its own stack and
    passes, and the first still gets all of its 8 lanes (the up's own lane is the 17th)."""
    (valkey_project / "test_hold.py").write_text(HOLD)
    go = tmp_path / "go"
    with running_up(valkey_project, "-n", "2") as up:
        first = connect(up)
        assert (first.hello(up, 8) or {}).get("type") == "welcome"
        second = subprocess.Popen(
            [sys.executable, "-m", "testfleet", "run", "-n", "8"],
            cwd=valkey_project,
            env={**os.environ, "GO": str(go)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert second.stderr is not None
        said: list[str] = []
        try:
            # Until its 8 lanes are there (held until it ends), from the up or its own stack.
            while not said or ("ready in" not in said[-1] and said[-1]):
                said.append(second.stderr.readline())
            assert "8 lane(s)" in said[-1], said
            lanes = [first.ask({"type": "lease", "lane": n}) for n in range(1, 9)]
            assert [lane["type"] for lane in lanes] == ["lane"] * 8, lanes
            urls = {lane["views"]["valkey"]["values"]["url"] for lane in lanes}
            assert len(urls) == 8
        finally:
            go.touch()
            said.append(second.communicate(timeout=300)[1])
            print("".join(said))  # shown when the test fails
    assert second.returncode == 0, said
    assert NOT_USING in said[0], said
    assert "this run needs 8" in said[0]
    assert "stack ready in" in said[1]


# -- bounds of a connection --------------------------------------------------------------------


def test_a_line_without_end_is_cut_off_and_the_up_stays_small(project: Path, connect: Connect):
    """200 MB without a newline: the up drops the connection at its line limit, says why in one
    line, its memory stays where it was, and the next run is served."""
    with running_up(project, "-n", "1") as up:
        before = status(up.pid)
        peer = connect(up)
        chunk = b"x" * MIB
        sent = 0
        began = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            while sent < 200 * MIB and time.monotonic() - began < 60:
                peer.sock.sendall(chunk)
                sent += len(chunk)
        after = status(up.pid)
        took = time.monotonic() - began
        print(f"sent {sent / MIB:.0f} MiB in {took:.1f} s; before {before}, after {after} (kB)")
        assert peer.answer() is None  # dropped
        # Its peak: at most 32 MiB above where it was (or its earlier peak, if higher).
        assert after["VmHWM"] <= max(before["VmHWM"], before["VmRSS"] + 32 * 1024), (before, after)
        assert sent < 200 * MIB
        lines = [line for line in up.said().splitlines() if "dropped a run's connection" in line]
        assert len(lines) == 1, up.said()
        assert "longer than" in lines[0]
        served(project)


def test_connections_past_the_limit_are_refused_until_one_closes(project: Path, connect: Connect):
    """Every connection past the limit is refused at once; when one closes a run is served."""
    with running_up(project, "-n", "1") as up:
        opened: list[Peer] = []
        for _ in range(200):
            peer = connect(up)
            answer = peer.hello(up)
            if answer is None or answer["type"] == "refused":
                break
            opened.append(peer)
        else:
            pytest.fail("200 connections and none refused")
        assert len(opened) == up_connections.MAX_CONNECTIONS
        opened.pop().close()
        served(project)


def test_a_connection_that_stalls_mid_message_or_before_hello_is_dropped(
    project: Path, connect: Connect
):
    """Half a message and silence, or no hello at all: dropped after the message time; a run
    that is merely quiet between whole messages stays connected."""
    with running_up(project, "-n", "1") as up:
        quiet, stalled, silent = (connect(up, timeout=30) for _ in range(3))
        assert (quiet.hello(up) or {}).get("type") == "welcome"
        assert (stalled.hello(up) or {}).get("type") == "welcome"
        began = time.monotonic()
        stalled.sock.sendall(b'{"type": "lea')
        assert stalled.answer() is None
        assert silent.answer() is None
        limit = up_connections.MESSAGE_SECONDS
        assert limit - 1 <= time.monotonic() - began <= limit + 5
        quiet.send({"type": "lease", "lane": 1})
        assert (quiet.answer() or {}).get("type") == "lane"
        assert "no whole message" in up.said()


def test_a_run_that_reads_nothing_is_dropped_after_the_send_time(project: Path, connect: Connect):
    """A connection that asks and asks and never reads the answers: the up's sends to it give
    up after their time, it is dropped with one line, and the up serves the next run."""
    with running_up(project, "-n", "1") as up:
        peer = connect(up, timeout=30)
        assert (peer.hello(up) or {}).get("type") == "welcome"
        assert peer.ask({"type": "lease", "lane": 1})["type"] == "lane"
        # Each answered with an error (lane 1 is held): far more than the socket buffers.
        asks = (json.dumps({"type": "lease", "lane": 1}).encode() + b"\n") * 20000
        with contextlib.suppress(OSError):
            peer.sock.sendall(asks)
        wait_for(lambda: "read nothing the up sent" in up.said(), timeout=30, what="the drop")
        served(project)


def test_out_of_file_descriptors_the_up_waits_without_spinning_and_serves_again(
    project: Path, connect: Connect
):
    """At its file limit the up stops taking connections for a while instead of spinning on
    accept, answers the runs it has, and takes new ones once descriptors are free."""
    with running_up(project, "-n", "1") as up:
        connected = connect(up)
        assert (connected.hello(up) or {}).get("type") == "welcome"
        soft, hard = resource.prlimit(up.pid, resource.RLIMIT_NOFILE)
        fds = Path(f"/proc/{up.pid}/fd")
        count = len(os.listdir(fds))
        flood: list[socket.socket] = []
        resource.prlimit(up.pid, resource.RLIMIT_NOFILE, (count + 2, hard))
        try:
            for _ in range(8):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(up.socket)
                flood.append(sock)
            wait_for(lambda: len(os.listdir(fds)) >= count + 2, what="the up to reach its limit")
            spent = cpu_seconds(up.pid)
            time.sleep(2)  # a window to measure: a spinning up burns all of it
            spent = cpu_seconds(up.pid) - spent
            assert spent < 0.5, f"{spent:.2f} s of CPU in 2 s"
            assert "file descriptors" in up.said()
            # The run it has is answered (a warm lane: nothing to open).
            connected.send({"type": "lease", "lane": 1})
            assert (connected.answer() or {}).get("type") == "lane"
            for sock in flood:
                sock.close()
            flood.clear()

            def welcomed() -> bool:
                try:
                    with contextlib.closing(Peer(up.socket, timeout=5)) as peer:
                        return (peer.hello(up) or {}).get("type") == "welcome"
                except OSError:  # not taken yet
                    return False

            wait_for(welcomed, timeout=20, what="a new connection to be served")
        finally:
            for sock in flood:
                sock.close()
            resource.prlimit(up.pid, resource.RLIMIT_NOFILE, (soft, hard))
        connected.close()
        served(project)
