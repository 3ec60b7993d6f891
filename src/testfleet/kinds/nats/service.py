"""NATS with JetStream: a server per lane, each with its own store directory. An external
server is one server for every lane, so lanes share it only when `isolation = "shared"`."""

from __future__ import annotations

import signal
import urllib.parse
from collections.abc import Mapping

from testfleet import readiness
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
from testfleet.files import write_private
from testfleet.kinds.base import Kind
from testfleet.kinds.nats.spec import NatsSpec
from testfleet.service import ServiceView, StackContext

AUTH_IN_CONTAINER = "/etc/testfleet/auth.conf"
# The readiness check speaks plain NATS with a token: TLS and user/password would be waited for
# in vain, so they are refused rather than timed out.
URL_FORM = "nats://[token@]host:port (TLS and user/password: not yet)"


def _address(url: str) -> Address:
    """An external server's url, its token as the user part."""
    address = parse_url(url, schemes=("nats",), default_port=4222, want=URL_FORM)
    if urllib.parse.urlsplit(url).password is not None:
        raise ValueError(f"want {URL_FORM}")
    return address


class NatsService:
    def __init__(self, name: str, spec: NatsSpec, ctx: StackContext, kind: Kind) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.kind = kind
        self.where = f"tool.testfleet.services.{name}"
        external = spec.backend_name == "external"
        # Ours get a token unless `auth = false` (127.0.0.1 is every local user's and every
        # run's); an external one's comes with its url.
        self.token = ctx.secret() if spec.auth and not external else None
        self._shared: ServiceView | None = None

    def start(self) -> None:
        """One server for every lane when they share it (an external one); else each lane
        starts its own."""
        if self.spec.isolation_mode in ("none", "shared"):
            self._shared = self._start_server("shared", "shared")

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        if self._shared is not None:
            return self._shared
        return self._start_server(f"lane{lane}", f"lane {lane}", node=f"{self.name}-{lane}")

    def _start_server(self, folder_name: str, label: str, node: str = "") -> ServiceView:
        folder = self.ctx.folder(self.name, folder_name)
        spec = self.spec
        auth = f'authorization {{ token: "{self.token}" }}\n'
        node = node or self.name

        def argv(port: int) -> list[str]:
            binary = self.ctx.binaries[self.name]
            args = [str(binary.path), "-a", "127.0.0.1", "-p", str(port), "-n", node]
            if spec.jetstream:
                args += ["-js", "-sd", str(folder / "jetstream")]
            if self.token:
                # A config file readable only by us: an --auth flag would show in `ps`.
                write_private(folder / "auth.conf", auth)
                args += ["-c", str(folder / "auth.conf")]
            return args

        inner = self.kind.inner_port or 4222
        command = ["-a", "0.0.0.0", "-p", str(inner), "-n", node]
        command += ["-js", "-sd", "/data/jetstream"] if spec.jetstream else []
        command += ["-c", AUTH_IN_CONTAINER] if self.token else []

        def probe(at: Started) -> Probe:
            token = at.address.user if at.address else self.token
            return readiness.nats_jetstream(at.host, at.port, token or None, spec.jetstream)

        server = Server(
            f"{self.name} ({label})",
            folder,
            probe,
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
            external=ExternalLaunch(self.name, spec.url or "", self.where, self._reach),
        )
        started = self.ctx.start(spec, server)
        if started.address is not None:  # used as it is, its token and all
            token = started.address.user
            values = {
                "url": started.address.url,
                "host": started.host,
                "port": str(started.port),
                "token": token,
            }
            return ServiceView(self.name, "nats", values)
        token_part = f"{self.token}@" if self.token else ""
        return ServiceView(
            self.name,
            "nats",
            {
                "url": f"nats://{token_part}{started.host}:{started.port}",
                "host": started.host,
                "port": str(started.port),
                "token": self.token or "",
            },
        )

    def _reach(self, url: str) -> Address:
        """An external server's url, read before it is waited for; its token is a secret."""
        address = _address(url)
        if address.user:
            self.ctx.secrets.append(address.user)
        return address

    def forget(self, lane: int) -> None:
        """Nothing of a lane's is left on a shared server: it has servers of its own."""

    def stop(self) -> None:
        """Servers are stopped by their backend; an external one is left as it was."""
