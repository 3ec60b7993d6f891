"""Valkey and Redis: a server per lane by default; `isolation = "database"` shares one server
and hands each lane a DB number (at most 16 lanes), which is also how lanes share an external
server. Nothing on an external server is flushed: testfleet did not create its data."""

from __future__ import annotations

import signal
import urllib.parse
from collections.abc import Mapping

from testfleet import readiness
from testfleet.backends.base import ContainerLaunch, NativeLaunch, Server
from testfleet.envvars import external_url
from testfleet.errors import ConfigError, ServiceError
from testfleet.files import write_private
from testfleet.kinds.base import Kind
from testfleet.kinds.valkey.spec import DB_NUMBERS, ValkeySpec
from testfleet.service import ServiceView, StackContext

CONFIG_IN_CONTAINER = "/etc/testfleet/server.conf"


class ValkeyService:
    def __init__(self, name: str, spec: ValkeySpec, ctx: StackContext, kind: Kind) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.kind = kind
        self.where = f"tool.testfleet.services.{name}"
        external = spec.backend_name == "external"
        self.password = ctx.service_secret(name, spec) if spec.password and not external else None
        self._shared: tuple[str, int] | None = None
        self._first_db = 0

    def start(self) -> None:
        if self.spec.backend_name == "external":
            self._start_external()
        elif self.spec.isolation_mode == "database":
            self._shared = self._start_server("shared", "shared")

    def _start_external(self) -> None:
        assert self.spec.url is not None
        url = urllib.parse.urlsplit(external_url(self.name, self.spec.url, self.where))
        want = "want redis://[:password@]host:port[/db]"
        # TLS and ACL users would need a client of their own: refused rather than lost.
        if url.scheme != "redis" or not url.hostname or url.username:
            got = "a user name" if url.username else f"{url.scheme or 'no scheme'}://…"
            raise ConfigError(f"{self.where}.url: {want} (TLS and ACL users: not yet), got {got}")
        try:
            host, port = url.hostname, url.port or 6379
            self._first_db = int(url.path.strip("/") or 0)
        except ValueError:
            raise ConfigError(f"{self.where}.url: {want}, with a numeric port and DB") from None
        self.password = urllib.parse.unquote(url.password) if url.password else None
        if self.password:
            self.ctx.secrets.append(self.password)
        # Lanes take the DB numbers from the URL's on: they must exist on that server.
        lanes = self.ctx.lanes if self.spec.isolation_mode == "database" else 1
        if self._first_db + lanes > DB_NUMBERS:
            raise ServiceError(
                f"{self.where}: {self.ctx.lanes} lanes from DB {self._first_db} need DB numbers"
                f" up to {self._first_db + self.ctx.lanes - 1}, and a default server has"
                f" {DB_NUMBERS}; use fewer lanes or a lower DB number in the url"
            )
        readiness.wait_external(
            readiness.resp_ping(host, port, self.password),
            timeout=self.spec.start_timeout,
            what=f"{self.name} at {host}:{port}",
        )
        self._shared = (host, port)

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

        spec = self.spec
        inner = self.kind.inner_port or 6379
        server = Server(
            f"{self.name} ({label})",
            folder,
            lambda host, port, _: readiness.resp_ping(host, port, self.password),
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
            # A kept container from an earlier run: its data is this project's own, emptied.
            reset=lambda host, port: readiness.resp_call(host, port, self.password, ("FLUSHALL",)),
        )
        started = self.ctx.start(spec, server)
        return started.host, started.port

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        if self._shared is not None:
            (host, port), db = self._shared, self._first_db + lane - 1
            if self.spec.isolation_mode == "shared":
                db = self._first_db
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
