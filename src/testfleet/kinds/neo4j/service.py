"""Neo4j: a server per lane (`isolation = "server"`; Community has one database per server),
or one server with a database per lane (`"database"`, which needs Enterprise). An external
server is used as it is (`"none"`, `"shared"`), or gets a database per lane named after the
run (`"database"`), dropped after it; nothing else there is touched."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

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
from testfleet.backends.external import parse_url
from testfleet.envvars import external_url
from testfleet.errors import ConfigError, ServiceError
from testfleet.files import write_private
from testfleet.kinds.base import Kind
from testfleet.kinds.neo4j.spec import Neo4jSpec
from testfleet.ports import free_port
from testfleet.processes import server_environ
from testfleet.service import HOST, ServiceView, StackContext
from testfleet.specs import Limits

if TYPE_CHECKING:
    from neo4j import Driver

Auth = tuple[str, str] | None

SCHEMES = ("bolt", "neo4j", "bolt+s", "neo4j+s", "bolt+ssc", "neo4j+ssc")
URL_FORM = "bolt://host:port (or neo4j://, bolt+s://, neo4j+s://)"
DEFAULT_DATABASE = "neo4j"
IMAGE_USER = "neo4j"  # NEO4J_AUTH sets this user's password, and no other's
CALL_SECONDS = 2.0  # the longest one readiness check may wait
ADMIN_SECONDS = 10.0  # connecting for CREATE/DROP DATABASE
# A server per lane: without these, N Neo4j servers each size heap and page cache by the
# machine's RAM. With a container memory limit they take shares of that instead.
HEAP, PAGECACHE = "512m", "256m"
# Set by us natively, whatever the install's own neo4j.conf says.
NATIVE_SETTINGS = {
    "server.default_listen_address": HOST,
    "server.default_advertised_address": HOST,
    "server.http.enabled": "false",
    "server.https.enabled": "false",
    # Server-side routing opens a second Bolt port (7688) that servers per lane would share.
    "dbms.routing.enabled": "false",
    # Auth off: it listens on 127.0.0.1 only, for this run's tests, and a password would have
    # to be set with `neo4j-admin dbms set-initial-password <pw>`, in that process's argv.
    "dbms.security.auth_enabled": "false",
    "server.memory.heap.initial_size": "128m",
    "server.memory.heap.max_size": HEAP,
    "server.memory.pagecache.size": PAGECACHE,
    # Community refuses unknown settings when strict; the Enterprise-only ones below are
    # meaningless there.
    "server.config.strict_validation.enabled": "false",
    "server.backup.enabled": "false",
}
# Enterprise's cluster listeners: a free port each, so servers per lane do not collide.
ENTERPRISE_LISTENERS = ("server.discovery", "server.cluster", "server.cluster.raft")
LOG_CONFIGS = ("server-logs.xml", "user-logs.xml")


def _neo4j(where: str) -> ModuleType:
    try:
        import neo4j
    except ImportError:
        raise ConfigError(
            f"{where}: Neo4j needs the neo4j driver next to testfleet;"
            " pip install 'testfleet[neo4j]'"
        ) from None
    return neo4j


def _driver(url: str, auth: Auth, seconds: float) -> Driver:
    """The one place a driver is made: tests put a fake here."""
    from neo4j import GraphDatabase

    return GraphDatabase.driver(
        url, auth=auth, connection_timeout=seconds, connection_acquisition_timeout=seconds
    )


def _delete_everything(url: str, auth: Auth) -> None:
    """Empty a kept container of an earlier run: its nodes, relationships, constraints and
    indexes (Community's one database)."""
    with _driver(url, auth, CALL_SECONDS) as driver, driver.session() as session:
        session.run("MATCH (n) CALL { WITH n DETACH DELETE n } IN TRANSACTIONS").consume()
        for kind in ("CONSTRAINT", "INDEX"):
            names = [
                r["name"]
                for r in session.run(f"SHOW {kind}S YIELD name, type")
                if r.get("type") != "LOOKUP"
            ]
            for name in names:
                session.run(f"DROP {kind} `{name}` IF EXISTS").consume()


def _bolt(url: str, auth: Auth, *, key: str = "url", source: str = "") -> Probe:
    """Ready when a query runs over Bolt with the lane's credentials, not just when the port
    is open (Neo4j opens it before its databases are online). A refused credential is the
    config's `key` (written as `source`), for the external backend's message."""

    def probe(left: float) -> None:
        from neo4j.exceptions import AuthError

        try:
            with _driver(url, auth, max(0.1, min(CALL_SECONDS, left))) as driver:
                driver.verify_connectivity()
                with driver.session() as session:
                    session.run("RETURN 1").single()
        except AuthError as exc:
            raise readiness.AuthFailed(str(exc), key=key, source=source) from None

    return probe


def _memory(limits: Limits | None) -> tuple[str, str]:
    """Heap and page cache: half and a quarter of a container's memory limit, if it has one."""
    if limits is None or limits.memory is None:
        return HEAP, PAGECACHE
    match = re.fullmatch(r"([\d.]+)([bkmg]?)", limits.memory.lower())
    if match is None:  # the config validated it against the same syntax
        return HEAP, PAGECACHE
    number, unit = match.groups()
    scale = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]
    mib = max(int(float(number) * scale) >> 20, 4)
    return f"{mib // 2}m", f"{mib // 4}m"


def install_conf(binary: Path) -> Path | None:
    """The conf directory of the install `binary` belongs to: NEO4J_CONF, a tarball's
    `<home>/conf`, or the Debian package's /etc/neo4j."""
    candidates = [os.environ.get("NEO4J_CONF"), binary.resolve().parent.parent / "conf"]
    for candidate in [*candidates, "/etc/neo4j"]:
        if candidate and (Path(candidate) / "neo4j.conf").is_file():
            return Path(candidate)
    return None


def native_conf(base: str, settings: Mapping[str, str]) -> str:
    """The install's neo4j.conf (its JVM options matter) without the keys we set, then ours:
    Neo4j refuses a key set twice."""
    ours = set(settings)
    kept = [line for line in base.splitlines() if line.partition("=")[0].strip() not in ours]
    return "\n".join([*kept, *(f"{key}={value}" for key, value in settings.items())]) + "\n"


def _address(url: str) -> Address:
    return parse_url(url, schemes=SCHEMES, default_port=7687, want=URL_FORM)


class Neo4jService:
    def __init__(self, name: str, spec: Neo4jSpec, ctx: StackContext, kind: Kind) -> None:
        self.where = f"tool.testfleet.services.{name}"
        _neo4j(self.where)  # before anything starts: a missing driver is a usage error
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.kind = kind
        self.backend = spec.backend_name
        self.user = spec.user
        self.password = ""
        if self.backend == "docker":
            if spec.user != IMAGE_USER:
                raise ConfigError(
                    f'{self.where}.user = "{spec.user}": the image sets a password for the'
                    f' user "{IMAGE_USER}" only; drop user (it is for external servers)'
                )
            self.password = ctx.service_secret(name, spec)  # 32 characters; Neo4j wants at least 8
        # Natively auth is off (see NATIVE_SETTINGS); an external server's is set at start.
        self._auth: Auth = (IMAGE_USER, self.password) if self.backend == "docker" else None
        self._url = ""
        self._shared: Started | None = None
        self._admin: Driver | None = None
        self._created: list[str] = []
        self._stopping = False
        self._lock = threading.Lock()

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """One server for every lane when lanes take a database on it or share it (an
        external one as it is); else each lane starts its own."""
        if self.spec.password is not None:  # an external server's (the config allows no other)
            self.password = external_url(self.name, self.spec.password, self.where, key="password")
            self.ctx.secrets.append(self.password)
            self._auth = (self.user, self.password)
        if self.spec.isolation_mode in ("database", "none", "shared"):
            self._shared = self._start_server("shared", "shared")
            self._url = self._bolt_url(self._shared)
        if self.spec.isolation_mode == "database":
            self._admin = _driver(self._url, self._auth, ADMIN_SECONDS)

    @staticmethod
    def _bolt_url(started: Started) -> str:
        return started.address.url if started.address else f"bolt://{started.host}:{started.port}"

    def _start_server(self, folder_name: str, label: str) -> Started:
        spec = self.spec
        folder = self.ctx.folder(self.name, folder_name)
        native = self.backend == "native"
        conf_dir = folder / "conf"
        binary = self.ctx.binaries[self.name].path if native else Path()
        source = install_conf(binary) if native else None

        def argv(port: int) -> list[str]:
            # Every attempt gets its own ports, written where only we can read them, and an
            # empty store: one a try on a taken port left behind would need recovery first.
            for leftover in ("data", "run"):
                shutil.rmtree(folder / leftover, ignore_errors=True)
            settings = {
                **NATIVE_SETTINGS,
                "server.bolt.listen_address": f":{port}",
                "server.bolt.advertised_address": f":{port}",
                **{f"server.directories.{d}": str(folder / d) for d in ("data", "logs", "run")},
            }
            for listener in ENTERPRISE_LISTENERS:
                extra = f":{free_port()}"
                settings[f"{listener}.listen_address"] = extra
                settings[f"{listener}.advertised_address"] = extra
            base = (source / "neo4j.conf").read_text() if source else ""
            conf_dir.mkdir(mode=0o700, exist_ok=True)
            write_private(conf_dir / "neo4j.conf", native_conf(base, settings))
            # Log4j's files are looked up in the conf directory on newer versions.
            for name in LOG_CONFIGS:
                if source and (source / name).is_file():
                    write_private(conf_dir / name, (source / name).read_text())
            return [str(binary), "console"]

        heap, pagecache = _memory(spec.limits)
        env = {
            "NEO4J_AUTH": f"{IMAGE_USER}/{self.password}",
            "NEO4J_server_memory_heap_max__size": heap,
            "NEO4J_server_memory_pagecache_size": pagecache,
        }
        # Enterprise images start only once the license is accepted: that is the user's
        # decision, taken by exporting it, never ours.
        accepted = os.environ.get("NEO4J_ACCEPT_LICENSE_AGREEMENT")
        if accepted:
            env["NEO4J_ACCEPT_LICENSE_AGREEMENT"] = accepted
        inner = self.kind.inner_port or 7687
        server = Server(
            f"{self.name} ({label})",
            folder,
            lambda at: _bolt(
                self._bolt_url(at),
                self._auth,
                key="url" if spec.password is None else "password",
                source=spec.password or "",
            ),
            timeout=spec.start_timeout,
            port=spec.port_number,
            native=NativeLaunch(
                argv,
                env={**server_environ(None), "NEO4J_CONF": str(conf_dir)},
                cwd=folder,
                # The data is thrown away with the run: no clean shutdown to wait for. The
                # whole group, since the `neo4j` script runs the server as a child JVM.
                stop_signal=signal.SIGKILL,
                signal_group=True,
            ),
            container=ContainerLaunch(
                image=spec.image or self.kind.image or "",
                inner_port=inner,
                # The password goes through the environment, never a command line.
                env=env,
                tmpfs={"/data": "rw,mode=1777"},
                redact=self.ctx.secrets,
                limits=spec.limits,
                reuse=spec.reuse,
            ),
            external=ExternalLaunch(self.name, spec.url or "", self.where, _address),
            reset=lambda host, port: _delete_everything(f"bolt://{host}:{port}", self._auth),
        )
        return self.ctx.start(spec, server)

    # -- lanes ---------------------------------------------------------------------------------

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        mode = self.spec.isolation_mode
        if mode == "database":
            return self._view(self._url, self._create_database(lane))
        if self._shared is not None:  # "none" (one lane) or "shared": the server as it is
            return self._view(self._url, DEFAULT_DATABASE)
        started = self._start_server(f"lane{lane}", f"lane {lane}")
        return self._view(self._bolt_url(started), DEFAULT_DATABASE)

    @property
    def _foreign(self) -> bool:
        """Whether the shared server is someone else's (see `Started.owned`)."""
        return self._shared is not None and not self._shared.owned

    def database_name(self, lane: int) -> str:
        """On a server testfleet does not own the name carries the run's id, so that other
        runs and the server's own databases are never touched. Neo4j allows letters, digits,
        dots, dashes."""
        if self._foreign:
            return f"testfleet-{self.ctx.run_id.lower()}-lane{lane}"
        return f"lane{lane}"

    def _create_database(self, lane: int) -> str:
        assert self._admin is not None
        name = self.database_name(lane)
        seconds = max(1, int(self.spec.start_timeout))
        # Under the lock, recorded first: a teardown waits for a create in flight, then
        # drops it.
        with self._lock:
            if self._stopping:
                raise ServiceError(f"{self.name}: not provisioned, the run is stopping")
            self._created.append(name)
            if self._foreign:
                leftovers.record(
                    self.ctx.run_dir.path,
                    "neo4j",
                    self._url,
                    name,
                    user=self.user,
                    password=self.password or "",
                )
            try:
                with self._admin.session(database="system") as session:
                    rows = session.run(f"CREATE DATABASE `{name}` WAIT {seconds} SECONDS").data()
            except Exception as exc:  # the driver's errors: refused, unsupported, unreachable
                raise ServiceError(
                    f'{self.name}: CREATE DATABASE {name} failed ({exc}); isolation = "database"'
                    " needs Neo4j Enterprise and a user allowed to create databases"
                ) from None
        failed = [row for row in rows if row.get("success") is False]
        if failed:
            raise ServiceError(
                f"{self.name}: database {name} not online after {seconds} s:"
                f" {failed[0].get('message') or failed[0].get('state')}; raise start-timeout"
            )
        return name

    def _view(self, url: str, database: str) -> ServiceView:
        parts = urllib.parse.urlsplit(url)
        values = {
            "url": url,
            "host": parts.hostname or HOST,
            "port": str(parts.port or 7687),
            "user": self.user if self.backend != "docker" else IMAGE_USER,
            "password": self.password,
            "database": database,
        }
        return ServiceView(self.name, self.spec.kind, values)

    def forget(self, lane: int) -> None:
        """Lanes of isolation = "database" are not handed out again (the record's
        `unrecycled`); a server per lane goes with the lane."""

    def stop(self) -> None:
        """Drop the databases this run made on an external server, and only those; local
        servers go with their backend."""
        with self._lock:
            self._stopping = True
            created, self._created = self._created, []
            admin, self._admin = self._admin, None
        if admin is None:
            return
        if self._foreign:
            for name in created:
                # The server may have gone away; its databases went with it, or stay for its
                # owner to see. Teardown of the other services goes on either way.
                with contextlib.suppress(Exception), admin.session(database="system") as s:
                    s.run(f"DROP DATABASE `{name}` IF EXISTS").consume()
        with contextlib.suppress(Exception):
            admin.close()
