"""`ready = { http = "/events" }` on a command service whose endpoint streams without end,
through the real CLI: a 2xx head is ready at once, and an endpoint that trickles its head a
byte a second is one readiness error at the start-timeout. Either way testfleet reads a
bounded prefix: the same run once grew to 3 GB and died of MemoryError."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from testfleet.errors import ExitCode
from tests.helpers import write_pyproject

pytestmark = pytest.mark.e2e

SERVER = """\
import itertools, socket, sys, threading, time

def stream(conn):
    conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/event-stream\\r\\n\\r\\n")
    event = b"data: " + b"x" * 65536 + b"\\n\\n"
    while True:
        conn.sendall(event)

def trickle(conn):
    for byte in itertools.cycle(b"HTTP/1.1 200 OK\\r\\nX-Slow: yes"):
        conn.sendall(bytes([byte]))
        time.sleep(1)

def serve(conn, how):
    with conn:
        try:
            conn.recv(65536)
            how(conn)
        except OSError:
            pass

listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
how = {"stream": stream, "trickle": trickle}[sys.argv[2]]
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn, how), daemon=True).start()
"""

START_TIMEOUT = 2
# testfleet's own start (imports, config, a lane's interpreter) and teardown, beside the wait.
OVERHEAD = 8.0
# Address space of testfleet and what it starts: an unbounded read fails here, at 2 GiB,
# instead of taking the machine's memory.
ADDRESS_SPACE_KIB = 2 * 1024 * 1024


def events_project(root: Path, how: str) -> Path:
    project = write_pyproject(
        root,
        "[tool.testfleet.services.events]\n"
        'kind = "command"\n'
        f'command = ["{sys.executable}", "server.py", "{{port}}", "{how}"]\n'
        'ready = { http = "/events" }\n'
        f"start-timeout = {START_TIMEOUT}\n",
    )
    (project / "server.py").write_text(SERVER)
    (project / "test_a.py").write_text("def test_a():\n    pass\n")
    return project


def run_bounded(project: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    result = subprocess.run(
        [
            "sh",
            "-c",
            f'ulimit -v {ADDRESS_SPACE_KIB} && exec "$0" -m testfleet run',
            sys.executable,
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, time.monotonic() - began


def test_an_endless_stream_with_a_2xx_head_is_ready(tmp_path: Path, own_run_base: Path):
    """The head says 200: ready at once, the suite runs, and memory stays small."""
    result, elapsed = run_bounded(events_project(tmp_path / "p", "stream"))
    assert result.returncode == 0, result.stderr
    assert "stack ready in" in result.stderr
    assert elapsed < OVERHEAD, f"took {elapsed:.1f} s"


def test_an_endless_trickle_is_one_readiness_error_at_the_start_timeout(
    tmp_path: Path, own_run_base: Path
):
    """A head that never completes, a byte a second: the run ends at about its start-timeout
    with the one-line readiness error and the exit code of a service that did not start."""
    result, elapsed = run_bounded(events_project(tmp_path / "p", "trickle"))
    assert result.returncode == ExitCode.SERVICE, result.stderr
    first, *rest = result.stderr.splitlines()
    assert first.startswith(
        f"testfleet: error: events (lane 1) not ready after {START_TIMEOUT} s (last check:"
        " TimeoutError: no complete answer in time ("
    ), result.stderr
    assert "raise its start-timeout if it is only slow; its log: " in first
    assert all(line.startswith("    ") for line in rest), result.stderr  # the log's tail
    assert "Traceback" not in result.stderr
    assert elapsed < START_TIMEOUT + OVERHEAD, f"took {elapsed:.1f} s"
