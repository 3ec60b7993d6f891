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
from testfleet.files import PRIVATE_DIR, TRAVERSABLE_DIR, private_dir
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
    # Every credential of the run, so that logs of processes that may print them (a dev
    # server's banner, the user's own app) have them replaced.
    secrets: list[str] = field(default_factory=list)

    def secret(self) -> str:
        value = secret()
        self.secrets.append(value)
        return value

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

    def service_dir(self, name: str, *, traversable: bool = False) -> Path:
        """The service's directory in the run: private, unless another account (PostgreSQL's,
        under root) must walk through it to its own folder."""
        return private_dir(
            self.run_dir.path / name, TRAVERSABLE_DIR if traversable else PRIVATE_DIR
        )

    def folder(self, name: str, label: str) -> Path:
        """A private folder for one of the service's servers: its config, data and log."""
        return private_dir(self.service_dir(name) / label)


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
    fixed_port: int | None = None,
    redact: Sequence[str] = (),
    umask: int = -1,
) -> tuple[ManagedProcess, int]:
    """Start a server on a fresh port (or the configured one) and wait until it is ready.

    Another process may take a fresh port between our check and the server's bind; then the
    server says so and we try a new port. A configured port is tried once.
    """
    attempts = 1 if fixed_port else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        port = fixed_port or free_port()
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
            redact=redact,
            umask=umask,
            **kwargs,
        )
        try:
            wait_ready(process, probe_for(port, process), timeout=timeout, what=name)
        except ServiceError as exc:
            in_use = address_in_use(process.tail())
            process.stop()
            ctx.supervisor.forget(process)
            if in_use and fixed_port:
                raise ServiceError(
                    f"{name}: port {fixed_port} is already in use by another process; stop it,"
                    " or drop `port` so testfleet picks a free one",
                    details=exc.details,
                ) from None
            if in_use and attempt < attempts:
                continue
            raise
        return process, port
    raise AssertionError("unreachable")
