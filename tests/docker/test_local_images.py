"""The local images of `testfleet images build` answer like the official images they stand for.

Each container starts the way testfleet starts one (published on 127.0.0.1 on a random host
port, its files copied in before it starts), must answer at the protocol level within a
deadline, and is removed afterwards whatever happened.
"""

from __future__ import annotations

import io
import json
import secrets
import socket
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import pytest
import redis

from testfleet.images.build import build, builder_lock

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

LABEL = "testfleet.test"
READY_TIMEOUT = 30.0  # seconds for a server in a container to answer
T = TypeVar("T")

# What each image declares: the official image's entrypoint, command, user, ports, folder.
CONFIG = {
    "postgres": ("999", ["docker-entrypoint.sh"], ["postgres"], {"5432/tcp"}, ""),
    "valkey": ("999", ["docker-entrypoint.sh"], ["valkey-server"], {"6379/tcp"}, "/data"),
    "redis": ("999", ["docker-entrypoint.sh"], ["redis-server"], {"6379/tcp"}, "/data"),
    "nats": (
        "",
        ["/nats-server"],
        ["--config", "nats-server.conf"],
        {"4222/tcp", "6222/tcp", "8222/tcp"},
        "",
    ),
    "openbao": (
        "999",
        ["docker-entrypoint.sh"],
        ["server", "-dev", "-dev-no-store-token"],
        {"8200/tcp"},
        "",
    ),
}


class Containers:
    """Starts containers labelled `testfleet.test=1` and remembers them, to check none is left."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.created: list[str] = []

    @contextmanager
    def run(
        self,
        tag: str,
        port: int,
        *,
        command: Sequence[str] | None = None,
        environment: Mapping[str, str] | None = None,
        tmpfs: Mapping[str, str] | None = None,
        files: Mapping[str, str] | None = None,
    ) -> Iterator[tuple[Any, int]]:
        """(container, host port of `port`); `files` (path -> text) go in read-only (0444)."""
        container = self.client.containers.create(
            tag,
            command=list(command) if command is not None else None,
            environment=dict(environment or {}),
            ports={f"{port}/tcp": ("127.0.0.1", None)},
            labels={LABEL: "1"},
            tmpfs=dict(tmpfs or {}),
        )
        self.created.append(container.id)
        try:
            if files:
                assert container.put_archive("/", _archive(files))
            container.start()
            published = poll(container, "a published port", lambda: _host_port(container, port))
            yield container, published
        finally:
            container.remove(force=True)

    def left(self) -> list[str]:
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL}=1"})
        return [c.id for c in found if c.id in self.created]


def _archive(files: Mapping[str, str]) -> bytes:
    """A tar of `files` and their folders below the top one (/etc exists; /etc/testfleet not)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = {p.rsplit("/", 1)[0] for p in files}
        for folder in sorted(folders):
            parts = folder.split("/")
            for i in range(2, len(parts) + 1):
                info = tarfile.TarInfo("/".join(parts[:i]))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
        for path, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(raw), 0o444
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


def _host_port(container: Any, port: int) -> int:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"]
    return int(bindings[0]["HostPort"])  # KeyError, TypeError, IndexError until it is set


def _logs(container: Any) -> str:
    try:
        return str(container.logs(tail=40).decode(errors="replace"))
    except docker.errors.APIError as exc:
        return f"(no logs: {exc})"


def poll(container: Any, what: str, check: Callable[[], T], timeout: float = READY_TIMEOUT) -> T:
    """`check()`'s value once it stops raising; fails at the deadline or when the container
    stops, with the container's log. The wait between tries grows from 10 ms to 200 ms."""
    deadline = time.monotonic() + timeout
    interval = 0.01
    while True:
        try:
            return check()
        except Exception as exc:
            error = exc
        container.reload()
        if container.status not in ("created", "running"):
            pytest.fail(f"{what}: container is {container.status}\n{_logs(container)}")
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s: {error!r}\n{_logs(container)}")
        time.sleep(interval)
        interval = min(interval * 2, 0.2)


def _argv_holds(container: Any, secret: str) -> bool:
    """Whether any process in the container shows `secret` in its command line."""
    table = container.top(ps_args="-o pid,args")
    return any(secret in " ".join(row) for row in table["Processes"])


@pytest.fixture(scope="module")
def images(local_images: dict[str, str]) -> dict[str, str]:
    """tests/docker/conftest.py's engine and images (prepare_docker)."""
    return local_images


@pytest.fixture(scope="module")
def containers(images: dict[str, str]) -> Iterator[Containers]:
    client = docker.from_env(timeout=120)
    pool = Containers(client)
    try:
        yield pool
        assert pool.left() == [], "containers left behind"
    finally:
        client.close()


def _tag(images: dict[str, str], kind: str) -> str:
    if kind not in images:
        pytest.skip(f"no {kind} image here (`testfleet images build` says why)")
    return images[kind]


@pytest.mark.parametrize("kind", list(CONFIG))
def test_image_declares_the_official_conventions(images, containers, kind):
    attrs = containers.client.images.get(_tag(images, kind)).attrs
    config = attrs["Config"]
    user, entrypoint, cmd, ports, workdir = CONFIG[kind]
    assert config["User"] == user
    assert config["Entrypoint"] == entrypoint
    assert config["Cmd"] == cmd
    assert set(config["ExposedPorts"]) == ports
    assert config["WorkingDir"] == workdir
    assert config["Labels"]["testfleet.local-image"] == "1"
    assert len(config["Labels"]["testfleet.content-hash"]) == 64


def test_building_again_keeps_every_image(images):
    """A build right after a build keeps every image. Both under the builders' lock: another
    copy of the suite may rebuild an image between this session's first build and this test
    (with another builder's code, say), and that is no needless rebuild of this one's."""
    with builder_lock():
        first = build(list(images))
        assert all(r.status in ("built", "up to date") for r in first), first
        again = build(list(images))
    assert {r.kind: r.status for r in again} == dict.fromkeys(images, "up to date")


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_connect(port: int, user: str, password: str) -> Callable[[], psycopg.Connection[Any]]:
    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=port, user=user, password=password, connect_timeout=5
        )

    return connect


def _show(conn: psycopg.Connection[Any], setting: str) -> Any:
    row = conn.execute(f"SHOW {setting}").fetchone()
    assert row is not None
    return row[0]


def test_postgres_as_testfleet_starts_it(images, containers):
    """User, password and PGDATA from the environment, a tmpfs at /var/lib/postgresql, and
    `postgres -c ...`: the superuser connects over TCP with its password (scram)."""
    password = secrets.token_urlsafe(16)
    env = {
        "POSTGRES_USER": "fleet",
        "POSTGRES_PASSWORD": password,
        "PGDATA": "/var/lib/postgresql/data",
    }
    with containers.run(
        _tag(images, "postgres"),
        5432,
        command=["postgres", "-c", "fsync=off", "-c", "max_connections=25"],
        environment=env,
        tmpfs={"/var/lib/postgresql": "mode=1777"},
    ) as (container, port):
        connect = _pg_connect(port, "fleet", password)
        with poll(container, "postgres accepts the password", connect) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            # POSTGRES_DB defaults to POSTGRES_USER, and is created, as in the official image.
            assert conn.execute("SELECT current_database(), current_user").fetchone() == (
                "fleet",
                "fleet",
            )
            assert _show(conn, "data_directory") == "/var/lib/postgresql/data"
            assert _show(conn, "max_connections") == "25"
            assert _show(conn, "fsync") == "off"
            assert _show(conn, "listen_addresses") == "*"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            _pg_connect(port, "fleet", "not-the-password")()
        assert not _argv_holds(container, password)


def test_postgres_leading_option_and_default_data_folder(images, containers):
    """A command that starts with `-` is postgres's options; PGDATA is 18's default."""
    password = secrets.token_urlsafe(16)
    with containers.run(
        _tag(images, "postgres"),
        5432,
        command=["-c", "fsync=off"],
        environment={"POSTGRES_PASSWORD": password},
    ) as (container, port):
        connect = _pg_connect(port, "postgres", password)
        with poll(container, "postgres accepts the password", connect) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)
            assert _show(conn, "data_directory") == "/var/lib/postgresql/18/docker"
            assert _show(conn, "fsync") == "off"


# --- Valkey and Redis ------------------------------------------------------------------------


def _resp(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=5, socket_connect_timeout=5
    )


@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_resp_server_with_testfleet_config(images, containers, kind):
    """`<kind>-server /etc/testfleet/server.conf` with a password, the file copied in (0444)."""
    password = secrets.token_urlsafe(16)
    conf = f'port 6379\nbind 0.0.0.0\nrequirepass {password}\nsave ""\nappendonly no\n'
    with containers.run(
        _tag(images, kind),
        6379,
        command=[f"{kind}-server", "/etc/testfleet/server.conf"],
        files={"etc/testfleet/server.conf": conf},
    ) as (container, port):
        client = _resp(port, password)
        try:
            assert poll(container, f"{kind} answers PING", client.ping) is True
            assert client.config_get("dir") == {"dir": "/data"}
        finally:
            client.close()
        # Raw RESP: redis-py retries a refused HELLO for seconds.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(4096).startswith(b"-NOAUTH")
        assert not _argv_holds(container, password)


@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_resp_server_default_command(images, containers, kind):
    """The image's own command: no password, and protected mode off as in the official image,
    so a client through the published port is served."""
    with containers.run(_tag(images, kind), 6379) as (container, port):
        client = _resp(port)
        try:
            assert poll(container, f"{kind} answers PING", client.ping) is True
            assert client.config_get("protected-mode") == {"protected-mode": "no"}
            assert client.config_get("dir") == {"dir": "/data"}
        finally:
            client.close()


# --- NATS ------------------------------------------------------------------------------------


def _nats_talk(port: int, send: bytes = b"", lines: int = 1) -> list[str]:
    """The first `lines` lines the server writes (INFO first), after sending `send`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if send:
            sock.sendall(send)
        buffer = b""
        while buffer.count(b"\r\n") < lines:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed after {buffer!r}")
            buffer += chunk
    return buffer.decode().split("\r\n")[:lines]


def _nats_info(port: int) -> dict[str, Any]:
    line = _nats_talk(port)[0]
    if not line.startswith("INFO "):
        raise ValueError(line)
    info: dict[str, Any] = json.loads(line[5:])
    return info


def test_nats_as_testfleet_starts_it(images, containers):
    """`-a 0.0.0.0 -p 4222 -js -sd /data/jetstream -c /etc/testfleet/auth.conf`: JetStream on,
    the token in the copied file required."""
    token = secrets.token_urlsafe(16)
    with containers.run(
        _tag(images, "nats"),
        4222,
        command=[
            *("-a", "0.0.0.0", "-p", "4222", "-js", "-sd", "/data/jetstream"),
            *("-c", "/etc/testfleet/auth.conf"),
        ],
        files={"etc/testfleet/auth.conf": f'authorization {{ token: "{token}" }}\n'},
    ) as (container, port):
        info = poll(container, "nats sends INFO", lambda: _nats_info(port))
        assert info["auth_required"] is True
        assert info["jetstream"] is True
        hello = b'CONNECT {"auth_token": "%s", "verbose": true}\r\nPING\r\n' % token.encode()
        assert _nats_talk(port, hello, lines=3)[1:] == ["+OK", "PONG"]
        wrong = b'CONNECT {"auth_token": "wrong", "verbose": true}\r\nPING\r\n'
        assert "Authorization Violation" in _nats_talk(port, wrong, lines=2)[1]


def test_nats_default_command(images, containers):
    with containers.run(_tag(images, "nats"), 4222) as (container, port):
        info = poll(container, "nats sends INFO", lambda: _nats_info(port))
        assert info["port"] == 4222
        assert not info.get("auth_required")


# --- OpenBao ---------------------------------------------------------------------------------

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for 127.0.0.1


def _get(url: str, token: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"X-Vault-Token": token} if token else {})
    with _HTTP.open(request, timeout=5) as response:
        body: dict[str, Any] = json.load(response)
        return body


def test_openbao_dev_server_as_testfleet_starts_it(images, containers):
    token = secrets.token_urlsafe(16)
    with containers.run(
        _tag(images, "openbao"),
        8200,
        command=["server", "-dev", "-dev-listen-address=0.0.0.0:8200", "-dev-no-store-token"],
        environment={"BAO_DEV_ROOT_TOKEN_ID": token},
    ) as (container, port):
        base = f"http://127.0.0.1:{port}/v1"
        health = poll(container, "openbao health", lambda: _get(f"{base}/sys/health"))
        assert health["initialized"] is True
        assert health["sealed"] is False
        me = _get(f"{base}/auth/token/lookup-self", token)
        assert me["data"]["id"] == token
        assert me["data"]["policies"] == ["root"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(f"{base}/auth/token/lookup-self", "not-the-token")
        refused.value.close()
        assert refused.value.code == 403
        assert not _argv_holds(container, token)
