"""Talking to a server that may misbehave, bounded by a deadline and a size: connecting,
reading to a marker, and a small HTTP/1.1 client (readiness checks, Vault's API).

A server may stream without end, trickle a byte at a time, accept and never answer, or send
an endless header. Socket timeouts alone bound each read, not the exchange, and urllib reads
a body to its end; here every read gets what is left of one deadline and no answer is read
past a limit. Whatever the server does, a call returns, or raises an OSError (TimeoutError at
the deadline) or a ValueError (an answer too long or not the protocol), in time.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

HEAD_LIMIT = 16 * 1024  # an HTTP answer's status line and headers
BODY_LIMIT = 64 * 1024  # a body read for what it says (a JSON document)
REDIRECTS = 5
_RECV = 4096
_REDIRECT_CODES = (301, 302, 303, 307, 308)


def left(deadline: float) -> float:
    """Seconds until `deadline` (time.monotonic()); TimeoutError once it has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no complete answer in the time given")
    return remaining


def connect(host: str, port: int, deadline: float) -> socket.socket:
    """A TCP connection, each address tried in what is left of the deadline."""
    error = OSError(f"{host} has no address")
    for family, kind, proto, _, address in _resolve(host, port, deadline):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(left(deadline))
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


def _resolve(host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
    """getaddrinfo, which has no timeout of its own: a name is looked up on a thread that is
    abandoned at the deadline (a resolver that does not answer can take 10 s and more)."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # a number: no lookup
    found: list[tuple[Any, ...]] = []
    failed: list[OSError] = []

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(left(deadline))
    if thread.is_alive():
        raise TimeoutError(f"looking up {host} took longer than the time given")
    if failed:
        raise failed[0]
    return found


def _recv(sock: socket.socket, deadline: float, so_far: int) -> bytes:
    try:
        sock.settimeout(left(deadline))
        return sock.recv(_RECV)
    except TimeoutError:
        got = f"{so_far} byte{'' if so_far == 1 else 's'} of it"
        raise TimeoutError(f"no complete answer in time ({got})") from None


def read_until(
    sock: socket.socket, markers: tuple[bytes, ...], deadline: float, *, answer: bytes, limit: int
) -> bytes:
    """`answer` and what follows it, up to the first of `markers`: ConnectionError when the
    server closes first, ValueError past `limit` bytes, TimeoutError at the deadline."""
    while not any(marker in answer for marker in markers):
        chunk = _recv(sock, deadline, len(answer))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        answer += chunk
        if len(answer) > limit:
            raise ValueError(f"an answer longer than {limit} bytes")
    return answer


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes = b""  # read only when asked for, and then at most its limit
    whole: bool = True  # whether `body` is all of it


def request(
    url: str,
    *,
    deadline: float,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    read_body: bool | Callable[[int], bool] = False,
    body_limit: int = BODY_LIMIT,
) -> Answer:
    """One HTTP(S) request. The body is read (its first `body_limit` bytes) when `read_body`
    is true or says so of the status. A GET follows redirects, as urllib did; the env's
    *_proxy variables are followed for hosts that are not on loopback (no proxy reaches ours)."""
    for _ in range(REDIRECTS + 1):
        answer = _exchange(
            url,
            method,
            headers or {},
            body,
            deadline=deadline,
            read_body=read_body,
            body_limit=body_limit,
        )
        location = answer.headers.get("location")
        if method != "GET" or answer.status not in _REDIRECT_CODES or not location:
            return answer
        url = urllib.parse.urljoin(url, location)
    raise ValueError(f"more than {REDIRECTS} redirects")


def _exchange(
    url: str,
    method: str,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    deadline: float,
    read_body: bool | Callable[[int], bool],
    body_limit: int,
) -> Answer:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) url: {url}")
    secure = parts.scheme == "https"
    host, port = parts.hostname, parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = f"[{host}]" if ":" in host else host
    authority += f":{port}" if parts.port else ""
    fields = {"Host": authority, "User-Agent": "testfleet", "Accept": "*/*", **headers}
    proxy = _proxy(parts.scheme, host)
    if proxy is not None and not secure:
        target = f"http://{authority}{target}"  # a proxy is asked for the whole url
        fields.update(_proxy_auth(proxy))
    if body is not None:
        fields["Content-Length"] = str(len(body))
    fields["Connection"] = "close"
    if any(c in target for c in " \r\n\t") or not target.isascii():
        raise ValueError(f"{url}: a path HTTP does not allow; percent-encode it")
    if any(c in f"{k}{v}" for k, v in fields.items() for c in "\r\n"):
        raise ValueError("a header with a line break in it")
    text = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    message = f"{method} {target} HTTP/1.1\r\n{text}\r\n".encode("latin-1") + (body or b"")
    where = (proxy.hostname or "", proxy.port or 80) if proxy is not None else (host, port)
    sock = connect(*where, deadline)
    try:
        if proxy is not None and secure:
            _tunnel(sock, f"{authority}:{port}" if not parts.port else authority, proxy, deadline)
        if secure:
            sock = _tls(sock, host, deadline)
        sock.settimeout(left(deadline))
        sock.sendall(message)
        reader = _Reader(sock, deadline, HEAD_LIMIT + 2 * body_limit)
        status, answer_headers = reader.head()
        wanted = read_body(status) if callable(read_body) else read_body
        if not wanted or method == "HEAD" or status in (204, 304):
            return Answer(status, answer_headers)
        return Answer(status, answer_headers, *reader.body(answer_headers, body_limit))
    finally:
        sock.close()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _proxy(scheme: str, host: str) -> urllib.parse.SplitResult | None:
    if _loopback(host):
        return None
    import urllib.request  # the env's proxy rules, as urllib reads them

    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{scheme}_proxy {proxy}: only an http:// proxy is supported")
    return parts


def _proxy_auth(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    pair = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _tunnel(
    sock: socket.socket, authority: str, proxy: urllib.parse.SplitResult, deadline: float
) -> None:
    fields = {"Host": authority, **_proxy_auth(proxy)}
    text = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    sock.settimeout(left(deadline))
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\n{text}\r\n".encode("latin-1"))
    status, _ = _Reader(sock, deadline, HEAD_LIMIT).head()
    if not 200 <= status < 300:
        raise ConnectionRefusedError(f"the proxy {proxy.hostname} refused a tunnel: HTTP {status}")


def _tls(sock: socket.socket, host: str, deadline: float) -> socket.socket:
    """TLS over `sock`, certificates checked as urllib checks them; the handshake as a whole
    gets what is left of the deadline (Python's ssl keeps a deadline over it)."""
    import ssl

    sock.settimeout(left(deadline))
    try:
        return ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


class _Reader:
    """An answer read from `sock`, never more than `limit` bytes of it in all."""

    def __init__(self, sock: socket.socket, deadline: float, limit: int) -> None:
        self.sock = sock
        self.deadline = deadline
        self.limit = limit
        self.taken = 0
        self.buf = b""

    def _fill(self) -> bool:
        chunk = _recv(self.sock, self.deadline, self.taken)
        self.taken += len(chunk)
        if self.taken > self.limit:
            raise ValueError(f"an answer longer than {self.limit // 1024} KiB")
        self.buf += chunk
        return bool(chunk)

    def _until(self, markers: tuple[bytes, ...], limit: int, what: str) -> bytes:
        """What comes before the first of `markers` (which is consumed too)."""
        while True:
            ends = [(at, len(m)) for m in markers if (at := self.buf.find(m)) >= 0]
            if ends:
                at, length = min(ends)
                found, self.buf = self.buf[:at], self.buf[at + length :]
                return found
            if len(self.buf) > limit:
                raise ValueError(f"{what} longer than {limit} bytes")
            if not self._fill():
                raise ConnectionError(f"the server closed the connection within the {what}")

    def _exactly(self, size: int, what: str) -> bytes:
        while len(self.buf) < size:
            if not self._fill():
                raise ConnectionError(f"the server closed the connection within the {what}")
        found, self.buf = self.buf[:size], self.buf[size:]
        return found

    def head(self) -> tuple[int, dict[str, str]]:
        """The status and headers, skipping 1xx answers; lines may end in a bare LF."""
        while True:
            while len(self.buf) < len(b"HTTP/") and self._fill():
                pass
            if not self.buf:
                raise ConnectionError("the server closed the connection without an answer")
            if not self.buf.startswith(b"HTTP/"):
                raise ValueError(f"not an HTTP answer: {self.buf[:40]!r}")
            head = self._until((b"\r\n\r\n", b"\n\n"), HEAD_LIMIT, "status line and headers")
            status, headers = _parse_head(head.decode("latin-1"))
            if not 100 <= status < 200:
                return status, headers

    def body(self, headers: Mapping[str, str], limit: int) -> tuple[bytes, bool]:
        """Up to `limit` bytes of the body, and whether that is all of it."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                line = self._until((b"\n",), 1024, "chunk size").split(b";")[0].strip()
                size = int(line, 16)
                if size == 0:  # trailers, if any, are left unread: the connection closes
                    return body, True
                # One byte past the limit tells a body that is longer from one that is not.
                body += self._exactly(min(size, limit + 1 - len(body)), "body")
                if len(body) > limit:
                    return body[:limit], False
                self._until((b"\n",), 2, "chunk end")
        if "content-length" in headers:
            size = int(headers["content-length"])
            if size < 0:
                raise ValueError(f"Content-Length {size}")
            return self._exactly(min(size, limit), "body"), size <= limit
        while len(self.buf) <= limit and self._fill():  # to the end of the connection
            pass
        return self.buf[:limit], len(self.buf) <= limit


def _parse_head(head: str) -> tuple[int, dict[str, str]]:
    lines = head.replace("\r\n", "\n").split("\n")
    words = lines[0].split(None, 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        raise ValueError(f"not an HTTP answer: {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(words[1]), headers
