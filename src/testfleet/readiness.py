"""Readiness at the protocol level, polled against a deadline; never a fixed sleep."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from testfleet.backends.base import Handle, Probe
from testfleet.errors import ServiceError
from testfleet.processes import Supervisor, describe_exit, read_tail


class NotReady(Exception):
    """A probe saw the server answer, but not yet as a ready one."""


def wait_ready(process: Handle | None, probe: Probe, *, timeout: float, what: str) -> None:
    """Poll `probe` until it passes; fail fast when the server exits, with its log lines.
    Without a handle (an external server) only the deadline ends the wait."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    last = "no check completed"
    while True:
        code = process.exit_code() if process is not None else None
        if process is not None and code is not None:
            raise exited_while_starting(process, code, what)
        try:
            probe(max(deadline - time.monotonic(), 0.05))
            return
        except (OSError, NotReady, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # client libraries raise their own types while starting
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            if process is None:
                raise ServiceError(
                    f"{what} did not answer as ready in {timeout:g} s (last check: {last});"
                    " check its url and that it runs, or raise its start-timeout"
                )
            raise ServiceError(
                f"{what} not ready after {timeout:g} s (last check: {last}); raise its"
                f" start-timeout if it is only slow; its log: {process.keep_log()}",
                details=process.tail(),
            )
        time.sleep(delay)  # poll interval, grows to 50 ms
        delay = min(delay * 2, 0.05)


def exited_while_starting(process: Handle, code: int, what: str) -> ServiceError:
    ended = f"exited with code {code}" if code >= 0 else f"was {describe_exit(code)}"
    return ServiceError(
        f"{what} {ended} while starting; its log: {process.keep_log()}", details=process.tail()
    )


def tcp(host: str, port: int) -> Probe:
    def probe(left: float) -> None:
        socket.create_connection((host, port), timeout=min(1.0, left)).close()

    return probe


def http(url: str, *, expect_json: Mapping[str, object] | None = None) -> Probe:
    """Any 2xx answer; with `expect_json`, those keys must hold those values."""

    def probe(left: float) -> None:
        try:
            with urllib.request.urlopen(url, timeout=min(2.0, left)) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise NotReady(f"HTTP {exc.code} from {url}") from None
        if expect_json:
            data = json.loads(body)
            for key, value in expect_json.items():
                if data.get(key) != value:
                    raise NotReady(f"{key} is {data.get(key)!r}, want {value!r}")

    return probe


def _resp_command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def resp_ping(host: str, port: int, password: str | None) -> Probe:
    """Valkey/Redis: AUTH (when set) and PING must answer +PONG (not -LOADING)."""

    def probe(left: float) -> None:
        with socket.create_connection((host, port), timeout=min(1.0, left)) as sock:
            request = _resp_command("AUTH", password) if password else b""
            sock.sendall(request + _resp_command("PING"))
            answer = _read_until(sock, b"PONG", b"-")
        if b"+PONG" not in answer:
            raise NotReady(answer.decode(errors="replace").strip())

    return probe


def resp_call(host: str, port: int, password: str | None, *commands: Sequence[str]) -> None:
    """Valkey/Redis: commands on one connection, each of which must answer +OK."""
    with socket.create_connection((host, port), timeout=10) as sock:
        request = _resp_command("AUTH", password) if password else b""
        sock.sendall(request + b"".join(_resp_command(*command) for command in commands))
        answer = _read_until(sock, b"+OK\r\n" * (len(commands) + (1 if password else 0)), b"-")
    if b"-" in answer.replace(b"+OK", b""):
        what = "; ".join(" ".join(command) for command in commands)
        raise ServiceError(f"{what} failed: {answer.decode(errors='replace')}")


def nats_jetstream(host: str, port: int, token: str | None, jetstream: bool) -> Probe:
    """NATS: the INFO greeting, then a PING round trip and, with JetStream, an account info
    request that only a ready JetStream answers. Raw socket: a failed client connect costs ~2 s."""

    def probe(left: float) -> None:
        with socket.create_connection((host, port), timeout=min(2.0, left)) as sock:
            greeting = _read_until(sock, b"\r\n")
            if not greeting.startswith(b"INFO "):
                raise NotReady(f"unexpected greeting {greeting[:40]!r}")
            connect: dict[str, object] = {"verbose": False, "pedantic": False, "headers": True}
            if token:
                connect["auth_token"] = token
            lines = [b"CONNECT " + json.dumps(connect).encode(), b"PING"]
            if jetstream:
                lines += [b"SUB _tf.ready 1", b"PUB $JS.API.INFO _tf.ready 0", b"", b"PING"]
            sock.sendall(b"\r\n".join(lines) + b"\r\n")
            answer = _read_until(sock, b"MSG _tf.ready" if jetstream else b"PONG", b"-ERR")
            if b"-ERR" in answer:
                raise NotReady(answer.decode(errors="replace").strip())
            if jetstream:
                body = _read_until(sock, b"}\r\n", answer=answer)
                if b'"error"' in body:
                    raise NotReady("JetStream not ready: " + body.decode(errors="replace")[-200:])

    return probe


def _read_until(
    sock: socket.socket, *markers: bytes, answer: bytes = b"", limit: int = 65536
) -> bytes:
    while not any(m in answer for m in markers):
        chunk = sock.recv(4096)
        if not chunk:
            raise NotReady("connection closed")
        answer += chunk
        if len(answer) > limit:
            raise NotReady("answer too long")
    return answer


def log_line(process: Handle, pattern: str) -> Probe:
    compiled = re.compile(pattern)

    def probe(left: float) -> None:
        if not compiled.search(process.log_text()):
            raise NotReady(f"no log line matches {pattern!r} yet")

    return probe


def command(
    supervisor: Supervisor,
    name: str,
    cmd: str,
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    per_check: float = 10.0,
) -> Probe:
    """A user's command that exits 0 when the service is ready. It runs as a supervised
    process group and is killed, children included, when the deadline comes first."""

    def probe(left: float) -> None:
        log_path.unlink(missing_ok=True)
        code, _ = supervisor.run_to_end(
            f"{name} ready check",
            [cmd],
            log_path=log_path,
            timeout=min(per_check, left),
            env=env,
            cwd=cwd,
            shell=True,
        )
        if code is None:
            raise NotReady(f"ready command still running after {min(per_check, left):.1f} s")
        if code != 0:
            raise NotReady(f"{describe_exit(code)}: {read_tail(log_path, 3)[-200:]}")

    return probe
