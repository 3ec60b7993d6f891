"""Valkey and Redis: a server per lane by default; `isolation = "database"` shares one server
and hands each lane a DB number (at most 16 lanes), which is also how lanes share an external
server. Nothing on an external server is flushed: testfleet did not create its data."""

from __future__ import annotations

import signal
import urllib.parse
from collections.abc import Mapping

from testfleet import readiness
from testfleet.backends.base import Address, ContainerLaunch, ExternalLaunch, NativeLaunch, Server
from testfleet.backends.external import parse_url
from testfleet.errors import ConfigError
from testfleet.files import write_private
from testfleet.kinds.base import Kind
from testfleet.kinds.valkey.spec import DB_NUMBERS, ValkeySpec
from testfleet.service import ServiceView, StackContext

CONFIG_IN_CONTAINER = "/etc/testfleet/server.conf"
# TLS and ACL users would need a client of their own: refused rather than lost.
URL_FORM = "redis://[:password@]host:port[/db] (TLS and ACL users: not yet)"


def _address(url: str) -> Address:
    """An external server's url, its DB number as its path."""
    address = parse_url(url, schemes=("redis",), default_port=6379, want=URL_FORM)
    if address.user:
        raise ValueError(f"want {URL_FORM}, got a user name")
    if not address.path.strip("/").isdigit() and address.path.strip("/"):
        raise ValueError(f"want {URL_FORM}, with a numeric port and DB")
    return address


class ValkeyService:
    def __init__(self, name: str, spec: ValkeySpec, ctx: StackContext, kind: Kind) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.kind = kind
        self.where = f"tool.testfleet.services.{name}"
        external = spec.backend_name == "external"
        # Ours get a password unless `auth = false`: 127.0.0.1 is every local user's and every
        # run's. An external one's comes with its url.
        self.password = ctx.service_secret(name, spec) if spec.auth and not external else None
        given = spec.settings.get("requirepass")
        if given is not None and not external:
            # The suite's own password (one it hard-codes) wins in the config file, so the
            # URL and the readiness probe carry that one.
            self.password = str(given) or None
            if self.password:
                ctx.secrets.append(self.password)
        self._shared: tuple[str, int] | None = None
        self._first_db = 0
        self._last_db = -1  # the highest DB number the shared server is known to have

    def start(self) -> None:
        """A server every lane shares, when lanes take DB numbers (or share it on purpose);
        else each lane starts its own."""
        if self.spec.isolation_mode in ("database", "shared"):
            self._shared = self._start_server("shared", "shared")
            lanes = self.ctx.lanes if self.spec.isolation_mode == "database" else 1
            self._has_db(self._first_db + lanes - 1)

    def _start_server(self, folder_name: str, label: str) -> tuple[str, int]:
        folder = self.ctx.folder(self.name, folder_name)
        settings = {"save": '""', "appendonly": "no", "databases": str(DB_NUMBERS)}
        if self.password:
            settings["requirepass"] = self.password
        settings.update({key: str(value) for key, value in self.spec.settings.items()})

        def config(port: int, bind: str) -> str:
            lines = {"port": str(port), "bind": bind, "daemonize": "no", **settings}
            return "".join(f"{key} {value}\n" for key, value in lines.items())

        def argv(port: int) -> list[str]:
            # A config file readable only by us: a --requirepass flag would show in `ps`.
            path = folder / "server.conf"
            write_private(path, config(port, "127.0.0.1") + f"dir {folder}\n")
            return [str(self.ctx.binaries[self.name].path), str(path)]

        spec, name = self.spec, self.name
        inner = self.kind.inner_port or 6379
        server = Server(
            f"{self.name} ({label})",
            folder,
            lambda at: readiness.resp_ping(
                at.host, at.port, at.address.password if at.address else self.password
            ),
            timeout=spec.start_timeout,
            port=spec.port_number,
            native=NativeLaunch(
                argv,
                cwd=folder,
                # Nothing to keep: the data is thrown away with the run, no graceful shutdown.
                stop_signal=signal.SIGKILL,
            ),
            container=ContainerLaunch(
                image=spec.image or self.kind.image or "",
                inner_port=inner,
                command=[f"{spec.kind}-server", CONFIG_IN_CONTAINER],
                files={CONFIG_IN_CONTAINER: config(inner, "0.0.0.0").encode()},
                redact=self.ctx.secrets,
                limits=spec.limits,
                reuse=spec.reuse,
            ),
            external=ExternalLaunch(name, spec.url or "", self.where, self._reach),
            # A kept container from an earlier run: its data is this project's own, emptied.
            reset=lambda host, port: readiness.resp_call(host, port, self.password, ("FLUSHALL",)),
        )
        started = self.ctx.start(spec, server)
        return started.host, started.port

    def _reach(self, url: str) -> Address:
        """An external server's url, read before it is waited for: its password and first DB
        number. Lanes take the DB numbers from that one on, which must exist on the server."""
        address = _address(url)
        self.password = address.password or None
        if self.password:
            self.ctx.secrets.append(self.password)
        self._first_db = int(address.path.strip("/") or 0)
        lanes = self.ctx.lanes if self.spec.isolation_mode == "database" else 1
        if self._first_db + lanes > DB_NUMBERS:
            raise ConfigError(
                f"{self.where}.url: {lanes} lanes from DB {self._first_db} need DB"
                f" numbers up to {self._first_db + lanes - 1}, and a default server has"
                f" {DB_NUMBERS}; use fewer lanes or a lower DB number in the url"
            )
        return address

    def _has_db(self, db: int) -> None:
        """The shared server has DB number `db`, or a usage error naming the fix: a server's
        `databases` may be fewer than 16 (an external one's, or ours through `settings`)."""
        if db <= self._last_db or self._shared is None:
            return
        host, port = self._shared
        try:
            readiness.resp_call(host, port, self.password, ("SELECT", str(db)))
        except readiness.Refused as exc:
            if self.spec.backend_name == "external":
                where, fix = f"{self.where}.url", "a lower DB number in the url, or a server with"
                fix += " more databases"
            else:
                where = f"{self.where}.settings.databases"
                fix = 'a higher settings.databases, or isolation = "server"'
            raise ConfigError(
                f"{where}: {db - self._first_db + 1} lane(s) from DB {self._first_db} take DB"
                f" numbers up to {db}, and the server at {host}:{port} has no DB {db}"
                f" ({exc.answer}); use fewer lanes, {fix}"
            ) from None
        self._last_db = max(self._last_db, db)

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        if self._shared is not None:
            (host, port), db = self._shared, self._first_db + lane - 1
            if self.spec.isolation_mode == "shared":
                db = self._first_db
            self._has_db(db)  # a lane after the start (a recheck's, an up's for a run)
        else:
            (host, port), db = self._start_server(f"lane{lane}", f"lane {lane}"), 0
        password = self.password or ""
        auth = f":{urllib.parse.quote(password, safe='')}@" if password else ""
        return ServiceView(
            self.name,
            self.spec.kind,
            {
                "url": f"redis://{auth}{host}:{port}/{db}",
                "host": host,
                "port": str(port),
                "password": password,
                "db": str(db),
            },
        )

    def forget(self, lane: int) -> None:
        """With isolation = "database", the lane's DB number is emptied for the next lane."""
        if self._shared is not None and self.spec.isolation_mode == "database":
            host, port = self._shared
            db = self._first_db + lane - 1
            readiness.resp_call(host, port, self.password, ("SELECT", str(db)), ("FLUSHDB",))

    def stop(self) -> None:
        """Servers are stopped by their backend; an external one is left as it was."""
