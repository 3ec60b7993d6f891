"""NATS with JetStream: a server per lane, each with its own store directory."""

from __future__ import annotations

import signal
from collections.abc import Mapping

from testfleet import readiness
from testfleet.config import NatsSpec
from testfleet.files import write_private
from testfleet.services.base import HOST, ServiceView, StackContext, start_on_free_port


class NatsService:
    def __init__(self, name: str, spec: NatsSpec, ctx: StackContext) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.token = ctx.secret() if spec.token else None

    def start(self) -> None:
        """Every lane gets its own server; nothing is shared."""

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        folder = self.ctx.folder(self.name, f"lane{lane}")
        binary = self.ctx.binaries[self.name]

        def argv(port: int) -> list[str]:
            args = [str(binary.path), "-a", HOST, "-p", str(port), "-n", f"{self.name}-{lane}"]
            if self.spec.jetstream:
                args += ["-js", "-sd", str(folder / "jetstream")]
            if self.token:
                # A config file readable only by us: an --auth flag would show in `ps`.
                config = folder / "auth.conf"
                write_private(config, f'authorization {{ token: "{self.token}" }}\n')
                args += ["-c", str(config)]
            return args

        _, port = start_on_free_port(
            self.ctx,
            f"{self.name} (lane {lane})",
            argv,
            lambda port, _: readiness.nats_jetstream(HOST, port, self.token, self.spec.jetstream),
            log_path=folder / "server.log",
            # Nothing to keep: the data is thrown away with the run, so no graceful shutdown.
            stop_signal=signal.SIGKILL,
            timeout=self.spec.start_timeout,
            cwd=folder,
            fixed_port=self.spec.port,
        )
        auth = f"{self.token}@" if self.token else ""
        return ServiceView(
            self.name,
            "nats",
            {
                "url": f"nats://{auth}{HOST}:{port}",
                "host": HOST,
                "port": str(port),
                "token": self.token or "",
            },
        )

    def stop(self) -> None:
        """Processes are stopped by the supervisor; nothing else to release."""


def planned(spec: NatsSpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    port = str(spec.port or 4222)
    return {"url": f"nats://{HOST}:{port}", "host": HOST, "port": port, "token": ""}
