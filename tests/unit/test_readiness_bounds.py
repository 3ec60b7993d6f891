"""Every readiness check, and every request to a Vault server, is bounded in time and in what
it reads, whatever the server does: streams forever, trickles a byte at a time, accepts and
never answers, sends an endless header. Each test runs against a loopback server of its own
that counts what it sends and gives up after CAP_SECONDS or CAP_BYTES: a check that is not
bounded then fails its test on time or memory instead of hanging it or filling the machine."""

from __future__ import annotations

import contextlib
import itertools
import socket
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from testfleet import readiness
from testfleet.backends.base import ExternalLaunch, Probe, Server
from testfleet.backends.external import ExternalBackend
from testfleet.errors import ServiceError
from testfleet.kinds import KINDS
from testfleet.kinds.vault import service as vault_service
from testfleet.processes import Supervisor
from testfleet.project import validate
from testfleet.rundir import RunDir

CAP_SECONDS = 8.0
CAP_BYTES = 64 << 20
# What a check may take past the time it was given (a poll interval, a busy 2-core machine).
MARGIN = 0.5
# The most a check may allocate at once, in bytes: the head of an answer and a few buffers.
MEMORY = 2 << 20
TIMEOUT = 1.0

Behaviour = Callable[[socket.socket, "FakeServer"], None]


class FakeServer:
    """A loopback server that treats every connection with `behave`, each on a thread."""

    def __init__(self, behave: Behaviour) -> None:
        self.behave = behave
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.sent = 0
        self.stopping = threading.Event()
        self.began = time.monotonic()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> FakeServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(5)
        assert not any(t.is_alive() for t in self.threads), "a connection did not end"

    def _accept(self) -> None:
        self.listener.settimeout(0.05)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        # A client that stops reading without closing must not block this thread forever.
        conn.settimeout(1.0)
        with conn, contextlib.suppress(OSError):
            self.behave(conn, self)

    def send(self, conn: socket.socket, data: bytes) -> bool:
        """Send `data`; False once the server should stop (told to, or a cap reached)."""
        if (
            self.stopping.is_set()
            or self.sent > CAP_BYTES
            or time.monotonic() - self.began > CAP_SECONDS
        ):
            return False
        conn.sendall(data)
        self.sent += len(data)
        return True


def streams(head: bytes, piece: bytes = b"x" * 65536) -> Behaviour:
    """`head`, then `piece` again and again, as fast as the client takes it."""

    def behave(conn: socket.socket, server: FakeServer) -> None:
        if server.send(conn, head):
            while server.send(conn, piece):
                pass

    return behave


def trickles(data: bytes, every: float = 0.1) -> Behaviour:
    """`data` over and over, one byte every `every` seconds: no single read ever waits long."""

    def behave(conn: socket.socket, server: FakeServer) -> None:
        for byte in itertools.cycle(data):
            if not server.send(conn, bytes([byte])):
                return
            server.stopping.wait(every)

    return behave


def silent(conn: socket.socket, server: FakeServer) -> None:
    """Accepts, reads nothing, answers nothing."""
    server.stopping.wait(CAP_SECONDS)


def measured(call: Callable[[], object]) -> tuple[float, int, BaseException | None]:
    """Seconds `call` took, the peak of what Python allocated meanwhile, what it raised."""
    tracemalloc.start()
    began = time.monotonic()
    raised: BaseException | None = None
    try:
        call()
    except Exception as exc:
        raised = exc
    elapsed = time.monotonic() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak, raised


def never_ready(make: Callable[[FakeServer], Probe], behave: Behaviour) -> BaseException | None:
    """Wait for a server that never answers as ready: the wait ends at its deadline, with a
    small margin, and allocates little whatever the server sends."""
    with FakeServer(behave) as server:
        probe = make(server)
        elapsed, peak, raised = measured(
            lambda: readiness.wait_ready(None, probe, timeout=TIMEOUT, what="fake")
        )
    assert isinstance(raised, ServiceError), raised
    assert elapsed < TIMEOUT + MARGIN, f"took {elapsed:.2f} s"
    assert peak < MEMORY, f"allocated {peak >> 10} KiB at its peak"
    return raised


def http(server: FakeServer) -> Probe:
    return readiness.http(server.url + "/events")


def vault_health(server: FakeServer) -> Probe:
    return readiness.http(server.url + "/v1/sys/health", expect_json={"sealed": False})


def resp(server: FakeServer) -> Probe:
    return readiness.resp_ping("127.0.0.1", server.port, "secret")


def nats(server: FakeServer) -> Probe:
    return readiness.nats_jetstream("127.0.0.1", server.port, None, True)


HEAD_200 = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
JSON_200 = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"sealed": false, "pad": "'


def test_http_check_of_an_endless_stream_reads_only_its_head():
    """`ready = { http = "/events" }` on a stream that never ends: a 2xx head is an answer, so
    the check passes at once, having read no more than the head."""
    with FakeServer(streams(HEAD_200)) as server:
        probe = http(server)
        elapsed, peak, raised = measured(lambda: probe(5.0))
    assert raised is None
    assert elapsed < MARGIN, f"took {elapsed:.2f} s"
    assert peak < MEMORY, f"allocated {peak >> 10} KiB at its peak"


@pytest.mark.parametrize(
    ("make", "behave"),
    [
        # A status line and then a header, a byte at a time, never the blank line.
        pytest.param(http, trickles(b"HTTP/1.1 200 OK\r\nX-Slow: yes"), id="http-trickle"),
        # Header lines of 60 KB, without end.
        pytest.param(
            http,
            streams(b"HTTP/1.1 200 OK\r\n", b"X-Pad: " + b"a" * 60_000 + b"\r\n"),
            id="http-endless-header",
        ),
        pytest.param(http, silent, id="http-silent"),
        # A 200 whose JSON body never ends: the body is read to a limit, not to its end.
        pytest.param(vault_health, streams(JSON_200), id="json-endless-body"),
        pytest.param(vault_health, trickles(JSON_200), id="json-trickle"),
        pytest.param(resp, trickles(b"+PON"), id="resp-trickle"),
        pytest.param(resp, streams(b"", b"." * 65536), id="resp-stream"),
        pytest.param(resp, silent, id="resp-silent"),
        pytest.param(nats, trickles(b'INFO {"server_id": "x"'), id="nats-trickle"),
        pytest.param(nats, streams(b"INFO ", b"x" * 65536), id="nats-stream"),
        pytest.param(nats, silent, id="nats-silent"),
    ],
)
def test_a_server_that_never_answers_as_ready_is_given_up_on_at_the_deadline(make, behave):
    """Whatever the server sends, the wait raises at its start-timeout, with little read."""
    never_ready(make, behave)


def test_the_tcp_check_ends_at_its_deadline_when_connecting_hangs():
    """A listener whose accept queue is full drops further connection attempts: connecting
    hangs, and the check ends at the time it was given."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    try:
        # Fill the queue: these connect (or hang) in the background, never accepted.
        for _ in range(4):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            queued.append(sock)
        probe = readiness.tcp("127.0.0.1", port)
        elapsed, _, raised = measured(lambda: probe(0.3))
    finally:
        for sock in queued:
            sock.close()
        listener.close()
    assert isinstance(raised, OSError), raised
    assert elapsed < 0.3 + MARGIN, f"took {elapsed:.2f} s"


def test_resp_calls_end_at_their_deadline(monkeypatch: pytest.MonkeyPatch):
    """FLUSHDB on a server that trickles its answer: the call ends at its deadline."""
    # Before this was bounded the module had no such setting: raising=False lets the test
    # show the old behaviour (a hang) rather than an AttributeError.
    monkeypatch.setattr(readiness, "CALL_SECONDS", 0.5, raising=False)
    with FakeServer(trickles(b"+O")) as server:
        elapsed, peak, raised = measured(
            lambda: readiness.resp_call("127.0.0.1", server.port, None, ("FLUSHDB",))
        )
    assert isinstance(raised, ServiceError | OSError), raised
    assert elapsed < 0.5 + MARGIN, f"took {elapsed:.2f} s"
    assert peak < MEMORY


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    run = RunDir.create(tmp_path / "base")
    supervisor = Supervisor(run)
    try:
        yield supervisor
    finally:
        supervisor.stop_all()
        run.remove()


LOUD = (
    "import sys, time\n"
    "sys.stdout.write(('x' * 1000 + '\\n') * 48_000)\n"
    "sys.stdout.write(sys.argv[1])\n"
    "sys.stdout.flush()\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize("last", ["", "ready to serve\n"])
def test_the_log_check_reads_a_long_log_in_pieces(supervisor: Supervisor, tmp_path: Path, last):
    """A server that logs 48 MB before (or without) its ready line: the check finds the line
    (or gives up at the deadline) without holding the log in memory."""
    log = tmp_path / "server.log"
    process = supervisor.spawn("loud", [sys.executable, "-c", LOUD, last], log_path=log)
    # The whole log first, so that no check can pass or fail before it is there.
    size = 48_000 * 1001 + len(last)
    deadline = time.monotonic() + 30
    while log.stat().st_size < size and time.monotonic() < deadline:
        time.sleep(0.02)
    probe = readiness.log_line(process, r"^ready")
    elapsed, peak, raised = measured(
        lambda: readiness.wait_ready(process, probe, timeout=3 * TIMEOUT, what="loud")
    )
    assert peak < MEMORY, f"allocated {peak >> 10} KiB at its peak"
    if last:
        assert raised is None
    else:
        assert isinstance(raised, ServiceError), raised
        assert elapsed < 3 * TIMEOUT + MARGIN, f"took {elapsed:.2f} s"


def test_a_ready_command_that_never_ends_is_killed_at_the_deadline(
    supervisor: Supervisor, tmp_path: Path
):
    """`ready = { command = "..." }` that hangs: killed, and the wait ends, at the deadline."""
    probe = readiness.command(
        supervisor,
        "hang",
        "sleep 60",
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        log_path=tmp_path / "ready.log",
    )
    elapsed, _, raised = measured(
        lambda: readiness.wait_ready(None, probe, timeout=TIMEOUT, what="hang")
    )
    assert isinstance(raised, ServiceError), raised
    assert elapsed < TIMEOUT + MARGIN, f"took {elapsed:.2f} s"


# -- Vault: the health check of an external server, and the requests that manage mounts -------


def external_vault(tmp_path: Path, url: str) -> Server:
    launch = ExternalLaunch("vault", url, "svc", vault_service._address)
    health = vault_service._health
    return Server("vault (shared)", tmp_path, health, timeout=TIMEOUT, external=launch)


def test_an_external_vault_that_streams_is_given_up_on_at_its_start_timeout(tmp_path: Path):
    """An external Vault URL whose health endpoint streams without end: one line at the
    start-timeout, and memory stays small."""
    with FakeServer(streams(JSON_200)) as server:
        elapsed, peak, raised = measured(
            lambda: ExternalBackend().start(external_vault(tmp_path, server.url))
        )
    assert isinstance(raised, ServiceError), raised
    assert raised.message.startswith(f"vault at 127.0.0.1:{server.port} did not answer as ready")
    assert elapsed < TIMEOUT + MARGIN, f"took {elapsed:.2f} s"
    assert peak < MEMORY, f"allocated {peak >> 10} KiB at its peak"


def vault_on(url: str) -> Any:
    """The Vault runtime of an external server at `url`, as if started."""
    table = {"backend": "external", "url": url, "isolation": "mount", "token": "t"}
    spec = validate({"services": {"vault": table}}).services["vault"]
    ctx = SimpleNamespace(secrets=[], lanes=1)
    service = KINDS["vault"].runtime("vault", spec, ctx, KINDS["vault"])  # type: ignore[arg-type]
    service._addr = url  # type: ignore[attr-defined]
    return service


def test_a_vault_request_to_a_trickling_server_ends_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
):
    """Making a lane's mount on a server that answers a byte at a time: a one-line error at
    the request's deadline, not a wait without end."""
    monkeypatch.setattr(vault_service, "HTTP_SECONDS", 0.5)
    with FakeServer(trickles(b"HTTP/1.1 200 OK\r\nX-Slow: yes")) as server:
        service = vault_on(server.url)
        elapsed, _, raised = measured(lambda: service._request("POST", "sys/mounts/m", {}))
    assert isinstance(raised, ServiceError), raised
    assert raised.message.startswith("vault: POST /v1/sys/mounts/m failed:")
    assert elapsed < 0.5 + MARGIN, f"took {elapsed:.2f} s"


def test_a_vault_refusal_with_an_endless_body_is_read_only_in_part():
    """A 403 whose body never ends: the error quotes its start, and little is read."""
    head = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\r\n"
    with FakeServer(streams(head + b'{"errors": ["permission denied"]}')) as server:
        service = vault_on(server.url)
        elapsed, peak, raised = measured(lambda: service._request("POST", "sys/mounts/m", {}))
    assert isinstance(raised, ServiceError), raised
    assert "answered HTTP 403" in raised.message
    assert '{"errors": ["permission denied"]}' in raised.message
    assert elapsed < MARGIN
    assert peak < MEMORY, f"allocated {peak >> 10} KiB at its peak"


def test_dropping_a_leftover_mount_ends_at_its_deadline(monkeypatch: pytest.MonkeyPatch):
    """The reaper's DELETE of a mount a killed run left, on a server that trickles."""
    monkeypatch.setattr("testfleet.kinds.vault.SECONDS", 0.5)
    with FakeServer(trickles(b"HTTP/1.1 204 No Content\r\nX-Slow: yes")) as server:
        entry = {"url": server.url, "name": "m", "token": "t"}
        elapsed, _, raised = measured(lambda: KINDS["vault"].drop_leftover(entry))  # type: ignore[misc]
    assert raised is not None
    assert elapsed < 0.5 + MARGIN, f"took {elapsed:.2f} s"
