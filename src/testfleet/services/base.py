"""What every service kind implements, and the helpers they share."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from testfleet.backends.native import ManagedProcess, RunAs, Supervisor
from testfleet.binaries import Binary
from testfleet.config import Project
from testfleet.errors import ServiceError
from testfleet.ports import address_in_use, free_port
from testfleet.readiness import Probe, wait_ready
from testfleet.rundir import RunDir

HOST = "127.0.0.1"
PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class ServiceView:
    """One lane's isolated view of one service: the values its placeholders and env use."""

    name: str
    kind: str
    values: Mapping[str, str]


@dataclass
class StackContext:
    """What services need from the run that starts them."""

    project: Project
    run_dir: RunDir
    supervisor: Supervisor
    run_as: RunAs | None
    binaries: Mapping[str, Binary] = field(default_factory=dict)
    lanes: int = 1

    @property
    def run_id(self) -> str:
        return self.run_dir.run_id

    def common_values(self, lane: int) -> dict[str, str]:
        """The placeholders every value may use: `{lane}`, `{lanes}`, `{run_id}`, ..."""
        return {
            "lane": str(lane),
            "lanes": str(self.lanes),
            "run_id": self.run_dir.run_id,
            "run_dir": str(self.run_dir.path),
            "project_dir": str(self.project.root),
        }

    def service_dir(self, name: str) -> Path:
        path = self.run_dir.path / name
        path.mkdir(exist_ok=True, mode=0o711)
        return path


class Service(Protocol):
    """A service of the stack. `start` runs once per run; `provision` once per lane."""

    name: str

    def start(self) -> None: ...

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView: ...

    def stop(self) -> None: ...


def secret() -> str:
    """A random credential for one run: URL-safe, so it needs no escaping in a URL."""
    return secrets.token_hex(16)


def start_on_free_port(
    ctx: StackContext,
    name: str,
    argv_for: Callable[[int], Sequence[str]],
    probe_for: Callable[[int, ManagedProcess], Probe],
    *,
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | Callable[[int], Mapping[str, str]] | None = None,
    cwd: Path | None = None,
    run_as: RunAs | None = None,
    stop_signal: int | None = None,
    shell: bool = False,
    signal_group: bool = False,
) -> tuple[ManagedProcess, int]:
    """Start a server on a fresh port and wait until it is ready.

    Another process may take the port between our check and the server's bind; then the
    server says so and we try a new port.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        kwargs = {} if stop_signal is None else {"stop_signal": stop_signal}
        process = ctx.supervisor.spawn(
            name,
            argv_for(port),
            log_path=log_path,
            env=env(port) if callable(env) else env,
            cwd=cwd,
            run_as=run_as,
            shell=shell,
            signal_group=signal_group,
            **kwargs,
        )
        try:
            wait_ready(process, probe_for(port, process), timeout=timeout, what=name)
        except ServiceError:
            in_use = address_in_use(process.tail())
            process.stop()
            ctx.supervisor.forget(process)
            if in_use and attempt < PORT_ATTEMPTS:
                continue
            raise
        return process, port
    raise AssertionError("unreachable")
