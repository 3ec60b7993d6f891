"""The small HTTP client of readiness checks and Vault's requests reads what urllib read
(bodies by length, chunked or to the end; redirects; the env's proxy), within its limits.
Its bounds in time and size are in test_readiness_bounds.py."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from testfleet import wire
from tests.unit.test_readiness_bounds import FakeServer


def answers(*replies: bytes) -> FakeServer:
    """A server that reads a request and sends the next of `replies` on each connection;
    what it was asked is in `.requests`."""
    queue = list(replies)
    requests: list[bytes] = []

    def behave(conn: socket.socket, server: FakeServer) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        requests.append(request)
        conn.sendall(queue.pop(0))

    server = FakeServer(behave)
    server.requests = requests  # type: ignore[attr-defined]
    return server


def soon() -> float:
    return time.monotonic() + 5


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"a": true}',
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n7\r\n: true}\r\n0\r\n\r\n',
        b'HTTP/1.0 200 OK\r\n\r\n{"a": true}',  # to the end of the connection
        b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"a": true}',
        b'HTTP/1.0 200 OK\n\n{"a": true}',  # bare LFs, as a hand-written server may send
    ],
    ids=["length", "chunked", "to-the-end", "continue", "bare-lf"],
)
def test_a_body_is_read_however_it_is_framed(reply: bytes):
    with answers(reply) as server:
        answer = wire.request(server.url + "/x", deadline=soon(), read_body=True)
    assert (answer.status, answer.body, answer.whole) == (200, b'{"a": true}', True)


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"a": true}',
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n{"a": true}\r\n0\r\n\r\n',
        b'HTTP/1.0 200 OK\r\n\r\n{"a": true}',
    ],
    ids=["length", "chunked", "to-the-end"],
)
def test_a_body_past_the_limit_is_cut_there_and_says_so(reply: bytes):
    with answers(reply) as server:
        answer = wire.request(server.url, deadline=soon(), read_body=True, body_limit=4)
    assert (answer.body, answer.whole) == (b'{"a"', False)


def test_the_request_names_the_host_and_closes():
    with answers(b"HTTP/1.1 204 No Content\r\n\r\n") as server:
        headers = {"X-Vault-Token": "t"}
        answer = wire.request(
            server.url + "/v1/sys/mounts/m?x=1",
            method="POST",
            headers=headers,
            body=b"{}",
            deadline=soon(),
        )
    assert answer.status == 204
    request = server.requests[0]  # type: ignore[attr-defined]
    assert request.startswith(b"POST /v1/sys/mounts/m?x=1 HTTP/1.1\r\n")
    for line in (f"Host: 127.0.0.1:{server.port}", "X-Vault-Token: t", "Content-Length: 2"):
        assert f"\r\n{line}\r\n".encode() in request
    assert b"\r\nConnection: close\r\n" in request


def test_a_get_follows_redirects():
    with answers(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /health/\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ) as server:
        answer = wire.request(server.url + "/health", deadline=soon())
    assert answer.status == 200
    assert server.requests[1].startswith(b"GET /health/ HTTP/1.1")  # type: ignore[attr-defined]


def test_an_answer_that_is_not_http_is_named():
    with (
        answers(b"-ERR unknown command 'GET'\r\n") as server,
        pytest.raises(ValueError, match=r"not an HTTP answer: b\"-ERR unknown"),
    ):
        wire.request(server.url, deadline=soon())


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent():
    with pytest.raises(ValueError, match="line break"):
        wire.request(
            "http://127.0.0.1:1/", headers={"X-Vault-Token": "t\r\nX-Evil: 1"}, deadline=soon()
        )


def test_a_proxy_from_the_env_is_asked_for_other_hosts(monkeypatch: pytest.MonkeyPatch):
    """As urllib did: http_proxy for a host elsewhere, with the whole url as the target."""
    with answers(b"HTTP/1.1 200 OK\r\n\r\n") as proxy:
        monkeypatch.setenv("http_proxy", f"http://u:p@127.0.0.1:{proxy.port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        answer = wire.request("http://vault.example:8200/v1/sys/health", deadline=soon())
    assert answer.status == 200
    request = proxy.requests[0]  # type: ignore[attr-defined]
    assert request.startswith(b"GET http://vault.example:8200/v1/sys/health HTTP/1.1\r\n")
    assert b"\r\nProxy-Authorization: Basic dTpw\r\n" in request


def test_no_proxy_is_asked_for_loopback(monkeypatch: pytest.MonkeyPatch):
    """A proxy cannot reach this machine's 127.0.0.1, where our own servers listen."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    with answers(b"HTTP/1.1 200 OK\r\n\r\n") as server:
        assert wire.request(server.url, deadline=soon()).status == 200


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_https_checks_the_certificate_as_urllib_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An external Vault is often https: its certificate is checked against the system's
    (SSL_CERT_FILE too), and the answer is read through TLS."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def behave(conn: socket.socket, server: FakeServer) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            request = b""
            while b"\r\n\r\n" not in request:
                request += tls.recv(4096)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with FakeServer(behave) as server:
        url = f"https://127.0.0.1:{server.port}/v1/sys/health"
        with pytest.raises(ssl.SSLCertVerificationError):
            wire.request(url, deadline=soon())
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        answer = wire.request(url, deadline=soon(), read_body=True)
    assert (answer.status, answer.body) == (200, b"ok")
