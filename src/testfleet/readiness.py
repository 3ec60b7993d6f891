"""Readiness at the protocol level, polled against a deadline; never a fixed sleep.

Each check is held to the time it is given and reads a bounded prefix of what the server
says (wire.py), whatever the server does: a check that waited on a server streaming without
end grew testfleet to gigabytes, and one that trickles a byte a second never timed out."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from testfleet import wire
from testfleet.backends.base import Handle, Probe
from testfleet.errors import ServiceError
from testfleet.processes import ManagedProcess, Supervisor, describe_exit, read_tail

# The longest one attempt of a check may take: a connection that hangs is retried afresh.
TCP_SECONDS = 1.0
HTTP_SECONDS = 2.0
NATS_SECONDS = 2.0
# A command on a running Valkey/Redis (FLUSHALL, FLUSHDB), from connecting to its answer.
CALL_SECONDS = 10.0
# What one answer of a RESP or NATS server may come to before it is not a ready one.
ANSWER_LIMIT = 64 * 1024


class NotReady(Exception):
    """A probe saw the server answer, but not yet as a ready one."""


class AuthFailed(Exception):
    """A probe saw the server refuse the credential it was given (`answer`: the server's or
    its client's words). For an external server that is final: no wait can change a wrong
    password, so the wait ends at once (a server of ours is polled on: it may still be
    setting its own). `key` is the service's config key holding the credential, `source` that
    key's text as written (`{env.VAULT_TOKEN}`) when the backend does not know it."""

    def __init__(
        self, answer: str, *, credential: str = "password", key: str = "url", source: str = ""
    ) -> None:
        super().__init__(answer)
        self.answer = answer
        self.credential = credential
        self.key = key
        self.source = source


# What Valkey/Redis (AUTH with a wrong password, or none where one is required; Redis before
# 6 said "invalid password") and NATS (a wrong or missing token) answer a refused client.
RESP_REFUSED = re.compile(r"-(WRONGPASS|NOAUTH)\b|-ERR invalid password")
NATS_REFUSED = re.compile(r"-ERR 'Authorization Violation'")


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
        except AuthFailed as exc:
            if process is None:
                raise
            last = f"{type(exc).__name__}: {exc}"
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


def _deadline(left: float, most: float) -> float:
    return time.monotonic() + min(most, left)


def tcp(host: str, port: int) -> Probe:
    def probe(left: float) -> None:
        wire.connect(host, port, _deadline(left, TCP_SECONDS)).close()

    return probe


def http(url: str, *, expect_json: Mapping[str, object] | None = None) -> Probe:
    """Any 2xx answer, from its head alone (the body of `/events` may never end); with
    `expect_json`, a JSON body of at most wire.BODY_LIMIT whose keys hold those values."""

    def probe(left: float) -> None:
        deadline = _deadline(left, HTTP_SECONDS)
        answer = wire.request(url, deadline=deadline, read_body=bool(expect_json))
        if not 200 <= answer.status < 300:
            raise NotReady(f"HTTP {answer.status} from {url}")
        if expect_json:
            if not answer.whole:
                raise NotReady(f"a body longer than {wire.BODY_LIMIT // 1024} KiB from {url}")
            data = json.loads(answer.body)
            if not isinstance(data, dict):
                raise NotReady(f"want a JSON object from {url}, got {answer.body[:60]!r}")
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
        deadline = _deadline(left, TCP_SECONDS)
        with wire.connect(host, port, deadline) as sock:
            request = _resp_command("AUTH", password) if password else b""
            sock.sendall(request + _resp_command("PING"))
            answer = _read_until(sock, deadline, b"PONG", b"-")
            if b"+PONG" not in answer and b"-" in answer:
                refusal = _error_line(sock, deadline, answer[answer.find(b"-") :])
                if RESP_REFUSED.match(refusal):
                    raise AuthFailed(refusal.removeprefix("-"))
        if b"+PONG" not in answer:
            raise NotReady(answer.decode(errors="replace").strip())

    return probe


class Refused(ServiceError):
    """A Valkey/Redis server answered a command with an error (`answer`, without its "-")."""

    def __init__(self, message: str, answer: str) -> None:
        super().__init__(message)
        self.answer = answer


def resp_call(host: str, port: int, password: str | None, *commands: Sequence[str]) -> None:
    """Valkey/Redis: commands on one connection, each of which must answer +OK; Refused
    when one answers an error."""
    deadline = time.monotonic() + CALL_SECONDS
    what = "; ".join(" ".join(command) for command in commands)
    try:
        with wire.connect(host, port, deadline) as sock:
            request = _resp_command("AUTH", password) if password else b""
            sock.sendall(request + b"".join(_resp_command(*command) for command in commands))
            oks = b"+OK\r\n" * (len(commands) + (1 if password else 0))
            answer = _read_until(sock, deadline, oks, b"-")
            error = answer.find(b"-")
            if error >= 0 and b"\r\n" not in answer[error:]:  # the error's whole line
                line = _read_until(sock, deadline, b"\r\n", answer=answer[error:])
                answer = answer[:error] + line
    except (OSError, NotReady) as exc:
        raise ServiceError(f"{what} on {host}:{port} failed: {exc}") from None
    if b"-" in answer.replace(b"+OK", b""):
        refusal = answer[answer.find(b"-") + 1 :].split(b"\r\n")[0].decode(errors="replace")
        raise Refused(f"{what} failed: {refusal}", refusal)


def nats_jetstream(host: str, port: int, token: str | None, jetstream: bool) -> Probe:
    """NATS: the INFO greeting, then a PING round trip and, with JetStream, an account info
    request that only a ready JetStream answers. Raw socket: a failed client connect costs ~2 s."""

    def probe(left: float) -> None:
        deadline = _deadline(left, NATS_SECONDS)
        with wire.connect(host, port, deadline) as sock:
            greeting = _read_until(sock, deadline, b"\r\n")
            if not greeting.startswith(b"INFO "):
                raise NotReady(f"unexpected greeting {greeting[:40]!r}")
            connect: dict[str, object] = {"verbose": False, "pedantic": False, "headers": True}
            if token:
                connect["auth_token"] = token
            lines = [b"CONNECT " + json.dumps(connect).encode(), b"PING"]
            if jetstream:
                lines += [b"SUB _tf.ready 1", b"PUB $JS.API.INFO _tf.ready 0", b"", b"PING"]
            sock.sendall(b"\r\n".join(lines) + b"\r\n")
            answer = _read_until(
                sock, deadline, b"MSG _tf.ready" if jetstream else b"PONG", b"-ERR"
            )
            if b"-ERR" in answer:
                refusal = _error_line(sock, deadline, answer[answer.find(b"-ERR") :])
                if NATS_REFUSED.match(refusal):
                    raise AuthFailed(refusal.removeprefix("-"), credential="token")
                raise NotReady(answer.decode(errors="replace").strip())
            if jetstream:
                body = _read_until(sock, deadline, b"}\r\n", answer=answer)
                if b'"error"' in body:
                    raise NotReady("JetStream not ready: " + body.decode(errors="replace")[-200:])

    return probe


def _error_line(sock: socket.socket, deadline: float, start: bytes) -> str:
    """A refusal's whole line from its `start` (a server may close right after it)."""
    with contextlib.suppress(NotReady, OSError):
        start = _read_until(sock, deadline, b"\r\n", answer=start)
    return start.split(b"\r\n")[0].decode(errors="replace")


def _read_until(
    sock: socket.socket, deadline: float, *markers: bytes, answer: bytes = b""
) -> bytes:
    try:
        return wire.read_until(sock, markers, deadline, answer=answer, limit=ANSWER_LIMIT)
    except ConnectionError:
        raise NotReady("connection closed") from None
    except ValueError:
        raise NotReady(f"an answer longer than {ANSWER_LIMIT // 1024} KiB") from None


def log_line(process: Handle, pattern: str) -> Probe:
    """A line of the server's log matches `pattern` (`^` is a line's start). A process's log
    is read on from where the last check stopped, a piece at a time, for as long as the check
    is given: a server may log gigabytes before its ready line, or never write one."""
    compiled = re.compile(pattern)
    if not isinstance(process, ManagedProcess):  # a container's log comes whole from its engine

        def whole(left: float) -> None:
            if not any(compiled.search(line) for line in process.log_text().splitlines()):
                raise NotReady(f"no log line matches {pattern!r} yet")

        return whole
    log = _LogLines(process.log_path, compiled)

    def probe(left: float) -> None:
        if not log.match(time.monotonic() + left):
            raise NotReady(f"no log line matches {pattern!r} yet")

    return probe


class _LogLines:
    """The lines of a growing log file, read from where the last look stopped; a line longer
    than LINE_LIMIT is matched by its start."""

    PIECE = 128 * 1024
    LINE_LIMIT = 64 * 1024

    def __init__(self, path: Path, pattern: re.Pattern[str]) -> None:
        self.path = path
        self.pattern = pattern
        self.offset = 0
        self.partial = b""  # the start of a line whose end is not read yet
        self.skipping = False  # in the rest of an over-long line, already matched

    def _matches(self, line: bytes) -> bool:
        return self.pattern.search(line.decode("utf-8", "replace")) is not None

    def match(self, deadline: float) -> bool:
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                while piece := log.read(self.PIECE):
                    self.offset += len(piece)
                    if self._read(piece):
                        return True
                    if time.monotonic() >= deadline:
                        break
        except OSError:  # not written yet
            return False
        # The last line may be complete but for its newline ("ready" and a wait).
        return bool(self.partial) and not self.skipping and self._matches(self.partial)

    def _read(self, piece: bytes) -> bool:
        if self.skipping:
            end = piece.find(b"\n")
            if end < 0:
                return False
            piece, self.skipping = piece[end + 1 :], False
        lines = (self.partial + piece).split(b"\n")
        self.partial = lines.pop()
        if any(self._matches(line) for line in lines):
            return True
        if len(self.partial) > self.LINE_LIMIT:
            line, self.partial, self.skipping = self.partial[: self.LINE_LIMIT], b"", True
            return self._matches(line)
        return False


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
