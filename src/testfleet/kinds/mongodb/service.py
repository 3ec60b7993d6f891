"""MongoDB: one server per run with a database per lane (`isolation = "database"`), or a
server per lane (`"server"`); with `replica-set = true`, a replica set of one member, which
transactions and change streams need. On an external server each lane gets a database named
after the run, dropped after it; nothing else there is touched."""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import urllib.parse
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from testfleet import leftovers, readiness
from testfleet.backends.base import (
    Address,
    ContainerLaunch,
    ExternalLaunch,
    NativeLaunch,
    Probe,
    Server,
    Started,
)
from testfleet.errors import ConfigError
from testfleet.kinds.base import Kind
from testfleet.kinds.mongodb.spec import MongoSpec
from testfleet.service import HOST, ServiceView, StackContext

if TYPE_CHECKING:
    from pymongo import MongoClient

REPLICA_SET = "rs0"
CONTAINER_DATA = "/data/db"
# No single driver call (a readiness check, a drop at teardown) may wait longer than this.
CALL_SECONDS = 2.0
# MongoDB refuses database names of 64 bytes or more.
MAX_DATABASE_NAME = 63
ALREADY_INITIALIZED = 23  # replSetInitiate's error code when an earlier check got there
AUTHENTICATION_FAILED = 18  # a wrong user or password: final, no wait changes it


def _pymongo(where: str) -> ModuleType:
    try:
        import pymongo
    except ImportError:
        raise ConfigError(
            f"{where}: MongoDB needs the pymongo driver next to testfleet;"
            " pip install 'testfleet[mongodb]'"
        ) from None
    return pymongo


def _client(url: str, seconds: float) -> MongoClient[dict[str, Any]]:
    """The one place a client is made: tests put a fake here."""
    from pymongo import MongoClient

    ms = max(50, int(seconds * 1000))
    return MongoClient(url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms)


def _ping(url: str, member: str | None = None) -> Probe:
    """Ready when the server answers a ping; for a replica set, once it is a writable
    primary. Initiating the set here keeps it a retried, idempotent readiness step."""

    def probe(left: float) -> None:
        from pymongo.errors import OperationFailure

        with _client(url, min(CALL_SECONDS, left)) as client:
            try:
                client.admin.command("ping")
            except OperationFailure as exc:
                if exc.code == AUTHENTICATION_FAILED:
                    raise readiness.AuthFailed(
                        str(exc.details.get("errmsg") if exc.details else exc)
                    ) from None
                raise
            if member is not None:
                _primary(client, member)

    return probe


def _primary(client: MongoClient[dict[str, Any]], member: str) -> None:
    from pymongo.errors import OperationFailure

    hello = client.admin.command("hello")
    if hello.get("isWritablePrimary"):
        return
    if "setName" not in hello:  # not initiated yet
        config = {"_id": REPLICA_SET, "members": [{"_id": 0, "host": member}]}
        try:
            client.admin.command("replSetInitiate", config)
        except OperationFailure as exc:
            if exc.code != ALREADY_INITIALIZED:
                raise
    raise readiness.NotReady("the replica set has no writable primary yet")


def _split_url(url: str) -> tuple[str, str, str, int]:
    """(user, password, first host, its port) of a mongodb:// URL, which may list several
    hosts (`h1:1,h2:2`, which urllib cannot parse as one) and IPv6 literals."""
    netloc = urllib.parse.urlsplit(url).netloc
    userinfo, _, hosts = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    first = hosts.split(",")[0]
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = first.partition(":")
    return (
        urllib.parse.unquote(user),
        urllib.parse.unquote(password),
        host,
        int(port) if port.isdigit() else 27017,
    )


def lane_url(url: str, database: str) -> str:
    """The external URL with its path replaced by the lane's database; credentials and query
    options are kept. The driver authenticates against the path's database unless told
    otherwise, so credentials keep pointing where they did: the old path, or admin."""
    parts = urllib.parse.urlsplit(url)
    query = parts.query
    user = _split_url(url)[0]
    options = {key.lower() for key, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    if user and "authsource" not in options:
        source = parts.path.strip("/") or "admin"
        query = f"{query}&authSource={source}" if query else f"authSource={source}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{database}", query, ""))


def _address(url: str) -> Address:
    """An external server's url: its first host (of a list, or an IPv6 literal) is named in
    messages; the driver gets the url as it is."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("mongodb", "mongodb+srv") or not parts.netloc.rpartition("@")[2]:
        raise ValueError(
            "want mongodb://[user:password@]host[:port][/database] (or mongodb+srv://),"
            f" got {parts.scheme or 'no scheme'}://…"
        )
    user, password, host, port = _split_url(url)
    return Address(
        url, parts.scheme, host, port, user, password, parts.path.strip("/"), parts.query
    )


class MongoService:
    def __init__(self, name: str, spec: MongoSpec, ctx: StackContext, kind: Kind) -> None:
        self.where = f"tool.testfleet.services.{name}"
        _pymongo(self.where)  # before anything starts: a missing driver is a usage error
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.kind = kind
        self.backend = spec.backend_name
        self.prefix = spec.database
        self._shared: Started | None = None
        self._external = ""  # an external server's url, as the driver takes it
        self._created: list[str] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """One server with a database per lane (on an external server, always); else each
        lane starts its own."""
        if self.spec.isolation_mode == "database":
            self._shared = self._start_server("shared", "shared")

    def _reach(self, url: str) -> Address:
        """An external server's url, read before it is waited for. Names on a server testfleet
        does not own carry the run's id: other runs and the server's own databases are never
        touched, and stop() drops what this run handed out."""
        address = _address(url)
        self.prefix = f"{self.spec.database}_{self.ctx.run_id.replace('-', '_')}"
        self._external = address.url
        if address.password:
            # Both spellings: a lane's own log may print the password or the URL holding it.
            quoted = urllib.parse.quote(address.password, safe="")
            self.ctx.secrets.extend(dict.fromkeys([address.password, quoted]))
        longest = f"{self.prefix}_{self.ctx.lanes}"
        if len(longest.encode()) > MAX_DATABASE_NAME:
            raise ConfigError(
                f"{self.where}.database: lane databases like {longest} would pass MongoDB's"
                f" limit of {MAX_DATABASE_NAME} bytes; use a shorter database name"
            )
        return address

    def _start_server(self, folder_name: str, label: str) -> Started:
        spec = self.spec
        folder = self.ctx.folder(self.name, folder_name)
        inner = self.kind.inner_port or 27017
        replica = ["--replSet", REPLICA_SET] if spec.replica_set else []

        def argv(port: int) -> list[str]:
            # Fresh per attempt: a try on a port found taken must leave no lock file behind.
            data = folder / "data"
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(mode=0o700)
            # No auth: it listens on 127.0.0.1 only, for this run's tests. No unix socket:
            # mongod's default one in /tmp would outlive a SIGKILL and clash between runs.
            binary = str(self.ctx.binaries[self.name].path)
            return [
                binary,
                *("--bind_ip", HOST, "--port", str(port), "--dbpath", str(data)),
                *("--quiet", "--nounixsocket", *replica),
            ]

        def probe(at: Started) -> Probe:
            if at.address is not None:
                return _ping(at.address.url)
            host, port = at.host, at.port
            # The member's address is the one mongod knows itself by. In a container that is
            # 127.0.0.1 and the inner port, which the host cannot reach (its port is the
            # published one): lane URLs therefore say directConnection=true, so drivers talk
            # to the address they were given instead of the members the set advertises.
            member = f"{HOST}:{inner if self.backend == 'docker' else port}"
            url = _local_url(host, port, "", "directConnection=true")
            ping = _ping(url, member if spec.replica_set else None)
            port_open = readiness.tcp(host, port)

            def check(left: float) -> None:
                # A refused connection fails at once here; the driver would take at least
                # its 0.5 s heartbeat to say so, while mongod is still starting.
                port_open(left)
                ping(left)

            return check

        server = Server(
            f"{self.name} ({label})",
            folder,
            probe,
            timeout=spec.start_timeout,
            port=spec.port_number,
            native=NativeLaunch(
                argv,
                cwd=folder,
                # The data is thrown away with the run: a clean shutdown (SIGTERM) would only
                # spend time writing a checkpoint nobody reads.
                stop_signal=signal.SIGKILL,
            ),
            container=ContainerLaunch(
                image=spec.image or self.kind.image or "",
                inner_port=inner,
                # Published on 127.0.0.1 only by the backend, so no auth in here either.
                command=["mongod", "--bind_ip_all", "--port", str(inner), *replica],
                # World-writable: the image's entrypoint, or an image's own user, owns nothing.
                tmpfs={CONTAINER_DATA: "rw,mode=1777"},
                redact=self.ctx.secrets,
                limits=spec.limits,
                reuse=spec.reuse,
            ),
            external=ExternalLaunch(self.name, spec.url or "", self.where, self._reach),
            reset=_drop_user_databases,
        )
        return self.ctx.start(spec, server)

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        shared = self._shared
        if shared is not None and shared.address is not None:
            database = f"{self.prefix}_{lane}"
            with self._lock:
                self._created.append(database)
            # Mongo makes a database on first write: only a SIGKILLed run needs this record.
            url = shared.address.url
            leftovers.record(self.ctx.run_dir.path, "mongodb", url, database)
            return self._view(lane_url(url, database), shared.host, shared.port, database)
        if shared is not None:
            (host, port), database = (shared.host, shared.port), f"{self.prefix}_{lane}"
        else:
            started = self._start_server(f"lane{lane}", f"lane {lane}")
            (host, port), database = (started.host, started.port), self.prefix
        query = "directConnection=true" if self.spec.replica_set else ""
        return self._view(_local_url(host, port, database, query), host, port, database)

    def _view(self, url: str, host: str, port: int, database: str) -> ServiceView:
        values = {"url": url, "host": host, "port": str(port), "database": database}
        return ServiceView(self.name, self.spec.kind, values)

    def forget(self, lane: int) -> None:
        """Lanes of isolation = "database" are not handed out again (the record's
        `unrecycled`); a server per lane goes with the lane."""

    def stop(self) -> None:
        """Drop the databases this run handed out on an external server, and only those;
        local servers go with their backend."""
        with self._lock:
            created, self._created = self._created, []
        if not created:
            return
        # Teardown goes on whatever happens here: the server may have gone away, and its
        # databases with it (or they stay for its owner to see).
        with contextlib.suppress(Exception), _client(self._external, CALL_SECONDS) as client:
            for database in created:
                with contextlib.suppress(Exception):
                    client.drop_database(database)


def _drop_user_databases(host: str, port: int) -> None:
    """Empty a kept container of an earlier run: every database but MongoDB's own."""
    with _client(_local_url(host, port, "", "directConnection=true"), CALL_SECONDS) as client:
        for name in client.list_database_names():
            if name not in ("admin", "config", "local"):
                client.drop_database(name)


def _local_url(host: str, port: int, database: str, query: str = "") -> str:
    return urllib.parse.urlunsplit(("mongodb", f"{host}:{port}", f"/{database}", query, ""))
