"""Lane namespaces against the kernel: their own loopback, entered by threads and processes,
gone with their holder."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from testfleet.netns import start_namespace, unavailable
from testfleet.runtime import Run
from tests.helpers import wait_for

CONNECT = "import socket; socket.create_connection(('127.0.0.1', %d), timeout=2)"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


def test_lane_namespace_has_its_own_loopback(tmp_path: Path):
    with Run() as run:
        (tmp_path / "1").mkdir()
        (tmp_path / "2").mkdir()
        one = start_namespace(run.supervisor, tmp_path / "1", 1)
        two = start_namespace(run.supervisor, tmp_path / "2", 2)
        with socket.socket() as outside:
            # The same port taken outside and in each namespace: three different networks.
            outside.bind(("127.0.0.1", 0))
            port = outside.getsockname()[1]
            outside.listen()
            for namespace in (one, two):
                with namespace.entered(), socket.socket() as inside:
                    inside.bind(("127.0.0.1", port))
                    inside.listen()
                    # A process started inside sees this listener, not the outside one.
                    probe = subprocess.run(
                        namespace.wrap(["python3", "-c", CONNECT % port]),
                        capture_output=True,
                        check=False,
                    )
                    assert probe.returncode == 0, probe.stderr
            # Back outside after each block: the outside listener answers this thread.
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        holders = [one.holder_pid, two.holder_pid]
        inodes = {os.stat(ns.path).st_ino for ns in (one, two)}
        assert len(inodes) == 2
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in holders), what="holders gone")
