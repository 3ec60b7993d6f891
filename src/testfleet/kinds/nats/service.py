"""NATS with JetStream: a server per lane, each with its own store directory. An external
server is one server for every lane, so lanes share it only when `isolation = "shared"`."""

from __future__ import annotations

import signal
import urllib.parse
from collections.abc import Mapping

from testfleet import readiness
from testfleet.backends.base import ContainerLaunch, NativeLaunch, Server
from testfleet.envvars import external_url
from testfleet.errors import ConfigError
from testfleet.files import write_private
from testfleet.kinds.base import Kind
from testfleet.kinds.nats.spec import NatsSpec
from testfleet.service import ServiceView, StackContext

AUTH_IN_CONTAINER = "/etc/testfleet/auth.conf"


class NatsService:
    def __init__(self, name: str, spec: NatsSpec, ctx: StackContext, kind: Kind) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.kind = kind
        self.where = f"tool.testfleet.services.{name}"
        external = spec.backend_name == "external"
        self.token = ctx.secret() if spec.token and not external else None
        self._external: ServiceView | None = None

    def start(self) -> None:
        """Every lane gets its own server; an external one is checked once, here."""
        if self.spec.backend_name != "external":
            return
        assert self.spec.url is not None
        address = external_url(self.name, self.spec.url, self.where)
        url = urllib.parse.urlsplit(address)
        # The readiness check speaks plain NATS with a token: TLS and user/password would be
        # waited for in vain, so they are refused rather than timed out.
        if url.scheme != "nats" or not url.hostname or url.password is not None:
            raise ConfigError(
                f"{self.where}.url: want nats://[token@]host:port (TLS and user/password: not yet)"
            )
        token = urllib.parse.unquote(url.username) if url.username else None
        if token:
            self.ctx.secrets.append(token)
        try:
            host, port = url.hostname, url.port or 4222
        except ValueError:
            raise ConfigError(f"{self.where}.url: the port must be a number") from None
        readiness.wait_external(
            readiness.nats_jetstream(host, port, token, self.spec.jetstream),
            timeout=self.spec.start_timeout,
            what=f"{self.name} at {host}:{port}",
        )
        values = {"url": address, "host": host, "port": str(port), "token": token or ""}
        self._external = ServiceView(self.name, "nats", values)

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        if self._external is not None:
            return self._external
        folder = self.ctx.folder(self.name, f"lane{lane}")
        spec = self.spec
        auth = f'authorization {{ token: "{self.token}" }}\n'

        def argv(port: int) -> list[str]:
            binary = self.ctx.binaries[self.name]
            args = [
                str(binary.path),
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-n",
                f"{self.name}-{lane}",
            ]
            if spec.jetstream:
                args += ["-js", "-sd", str(folder / "jetstream")]
            if self.token:
                # A config file readable only by us: an --auth flag would show in `ps`.
                write_private(folder / "auth.conf", auth)
                args += ["-c", str(folder / "auth.conf")]
            return args

        inner = self.kind.inner_port or 4222
        command = ["-a", "0.0.0.0", "-p", str(inner), "-n", f"{self.name}-{lane}"]
        command += ["-js", "-sd", "/data/jetstream"] if spec.jetstream else []
        command += ["-c", AUTH_IN_CONTAINER] if self.token else []
        server = Server(
            f"{self.name} (lane {lane})",
            folder,
            lambda host, port, _: readiness.nats_jetstream(host, port, self.token, spec.jetstream),
            timeout=spec.start_timeout,
            port=spec.port_number,
            # Nothing to keep: the data is thrown away with the run, so no graceful shutdown.
            native=NativeLaunch(argv, cwd=folder, stop_signal=signal.SIGKILL),
            container=ContainerLaunch(
                image=spec.image or self.kind.image or "",
                inner_port=inner,
                command=command,
                files={AUTH_IN_CONTAINER: auth.encode()} if self.token else {},
                redact=self.ctx.secrets,
                limits=spec.limits,
            ),
        )
        started = self.ctx.start(spec, server)
        token = f"{self.token}@" if self.token else ""
        return ServiceView(
            self.name,
            "nats",
            {
                "url": f"nats://{token}{started.host}:{started.port}",
                "host": started.host,
                "port": str(started.port),
                "token": self.token or "",
            },
        )

    def forget(self, lane: int) -> None:
        """Nothing of a lane's is left on a shared server: it has servers of its own."""

    def stop(self) -> None:
        """Servers are stopped by their backend; an external one is left as it was."""
