"""Valkey (or Redis): a server per lane by default; `isolation = "database"` shares one
server and hands each lane a DB number, which caps a run at 16 lanes."""

from __future__ import annotations

import signal
from collections.abc import Mapping

from testfleet import readiness
from testfleet.backends.native import ManagedProcess
from testfleet.config import VALKEY_DB_NUMBERS, ValkeySpec
from testfleet.files import write_private
from testfleet.services.base import HOST, ServiceView, StackContext, start_on_free_port


class ValkeyService:
    def __init__(self, name: str, spec: ValkeySpec, ctx: StackContext) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.password = ctx.secret() if spec.password else None
        self._shared: tuple[ManagedProcess, int] | None = None

    def start(self) -> None:
        if self.spec.isolation == "database":
            self._shared = self._start_server("shared", "shared")

    def _start_server(self, folder_name: str, label: str) -> tuple[ManagedProcess, int]:
        folder = self.ctx.folder(self.name, folder_name)
        binary = self.ctx.binaries[self.name]

        def argv(port: int) -> list[str]:
            # A config file readable only by us: a --requirepass flag would show in `ps`.
            lines = {
                "port": str(port),
                "bind": HOST,
                "dir": str(folder),
                "save": '""',
                "appendonly": "no",
                "daemonize": "no",
                "databases": str(VALKEY_DB_NUMBERS),
            }
            if self.password:
                lines["requirepass"] = self.password
            lines.update({key: str(value) for key, value in self.spec.settings.items()})
            config = folder / "server.conf"
            write_private(config, "".join(f"{key} {value}\n" for key, value in lines.items()))
            return [str(binary.path), str(config)]

        return start_on_free_port(
            self.ctx,
            f"{self.name} ({label})",
            argv,
            lambda port, _: readiness.resp_ping(HOST, port, self.password),
            log_path=folder / "server.log",
            # Nothing to keep: the data is thrown away with the run, so no graceful shutdown.
            stop_signal=signal.SIGKILL,
            timeout=self.spec.start_timeout,
            cwd=folder,
            fixed_port=self.spec.port,
        )

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        if self._shared is not None:
            port, db = self._shared[1], lane - 1
        else:
            port, db = self._start_server(f"lane{lane}", f"lane {lane}")[1], 0
        auth = f":{self.password}@" if self.password else ""
        return ServiceView(
            self.name,
            "valkey",
            {
                "url": f"redis://{auth}{HOST}:{port}/{db}",
                "host": HOST,
                "port": str(port),
                "password": self.password or "",
                "db": str(db),
            },
        )

    def stop(self) -> None:
        """Processes are stopped by the supervisor; nothing else to release."""


def planned(spec: ValkeySpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    port = str(spec.port or 6379)
    return {
        "url": f"redis://{HOST}:{port}/0",
        "host": HOST,
        "port": port,
        "password": "",
        "db": "0",
    }
