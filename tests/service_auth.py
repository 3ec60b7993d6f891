"""Asking a server of a run's stack for service, as this user or as `nobody`, with or without
its credential: what the auth tests of the native (tests/integration) and Docker (tests/docker)
backends share."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from testfleet.runtime import Run
from testfleet.stack import Stack, resolve_binaries
from tests.helpers import alive, project, recorded_pids

SYSTEM_PYTHON = Path("/usr/bin/python3")


class Case(NamedTuple):
    """A kind whose servers take a credential, and how to ask one."""

    service: str  # the service (named after its kind)
    variable: str  # its URL's variable
    field: str  # its credential's placeholder field
    protocol: str  # what PROBE speaks to it: "resp" or "nats"


VALKEY = Case("valkey", "VALKEY_URL", "password", "resp")
REDIS = Case("redis", "REDIS_URL", "password", "resp")
NATS = Case("nats", "NATS_URL", "token", "nats")

# What the other user runs: the system's Python with raw sockets (our venv may be closed to
# it, and a client library is not the point). The credential comes on stdin, not argv.
PROBE = r"""
import json, socket, sys
protocol, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
secret = sys.stdin.read()
with socket.create_connection((host, port), timeout=5) as sock:
    answer = b""
    def until(*marks):
        global answer
        while not any(m in answer for m in marks):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    if protocol == "resp":
        words = [["AUTH", secret]] if secret else []
        words.append(["SET", "intruder", "1"])
        for w in words:
            parts = [b"$%d\r\n%s\r\n" % (len(x), x.encode()) for x in w]
            sock.sendall(b"*%d\r\n" % len(w) + b"".join(parts))
        until(b"-", b"+OK\r\n" * len(words))
    else:
        until(b"\r\n")
        connect = {"verbose": False, "pedantic": False}
        if secret:
            connect["auth_token"] = secret
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        answer = b""
        until(b"PONG", b"-ERR")
print(answer.decode(errors="replace").strip())
"""


def can_be_nobody() -> bool:
    return os.geteuid() == 0 and shutil.which("runuser") is not None and SYSTEM_PYTHON.exists()


def as_nobody(case: Case, url: str, secret: str = "") -> str:
    """What `nobody` gets from the server at `url` (with `secret`, if given)."""
    if not can_be_nobody():
        pytest.skip("needs root (to act as another user), runuser and /usr/bin/python3")
    return ask(case, url, secret, user="nobody")


def ask(case: Case, url: str, secret: str = "", *, user: str | None = None) -> str:
    """The server's answer to a write (Valkey) or a PING (NATS) with `secret`, if given, from
    a process of `user` (else of ours)."""
    parts = urllib.parse.urlsplit(url)
    who = ["runuser", "-u", user, "--", str(SYSTEM_PYTHON)] if user else [sys.executable]
    done = subprocess.run(
        [*who, "-c", PROBE, case.protocol, str(parts.hostname), str(parts.port)],
        input=secret,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def refused(case: Case, answer: str) -> bool:
    """The server said no: NOAUTH without a password, WRONGPASS with another run's."""
    if case.protocol == "resp":
        return answer.startswith(("-NOAUTH", "-WRONGPASS"))
    return "Authorization Violation" in answer


def served(case: Case, answer: str) -> bool:
    """The write went through (Valkey), or the PING was answered (NATS)."""
    return answer.endswith("+OK") if case.protocol == "resp" else answer.endswith("PONG")


def stacks(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """For a fixture: stacks under a run-dir base of the test's own (short, on tmpfs: unix
    sockets hold 107 bytes); afterwards, checks that no process and no run directory is left."""
    base = Path(tempfile.mkdtemp(prefix="tfa-", dir="/dev/shm"))
    base.chmod(0o711)  # like the default base: other users may pass, not look
    runs: list[Run] = []
    try:
        with ExitStack() as exits:

            def make(
                services: dict[str, Any], *, lanes: int = 1, env: dict[str, str] | None = None
            ) -> Stack:
                root = tmp_path / f"project{len(runs)}"
                root.mkdir()
                loaded = project(root, {"services": services, "env": env or {}})
                run = exits.enter_context(Run(base / "runs"))
                runs.append(run)
                stack = Stack(loaded, run, resolve_binaries(loaded), lanes=lanes)
                exits.callback(stack.stop)
                stack.start()
                return stack

            yield make
            pids = [
                p
                for run in runs
                if (run.run_dir.path / "pids").exists()  # none with only containers
                for p in recorded_pids(run.run_dir.path)
            ]
        assert alive(pids) == [], "processes left running"
        assert all(not run.run_dir.path.exists() for run in runs), "run directory left behind"
    finally:
        shutil.rmtree(base, ignore_errors=True)
