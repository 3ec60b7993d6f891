"""Native backend: servers as supervised processes of ours (see processes.py), on free ports
of 127.0.0.1."""

from __future__ import annotations

from testfleet.backends.base import Handle, Server, Started
from testfleet.errors import ServiceError
from testfleet.ports import address_in_use, free_port
from testfleet.processes import Supervisor
from testfleet.readiness import wait_ready

PORT_ATTEMPTS = 3


class NativeBackend:
    """Runs servers as supervised processes of ours, on free ports of 127.0.0.1."""

    name = "native"
    host = "127.0.0.1"

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def start(self, server: Server) -> Started:
        """Start the server on a fresh port (or the configured one), wait until it is ready.

        Another process may take a fresh port between our check and the server's bind; then
        the server says so and we try a new port. A configured port is tried once."""
        launch = server.native
        if launch is None:
            raise ServiceError(f"{server.name}: this kind cannot run natively")
        attempts = 1 if server.port else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = server.port or free_port()
            env = launch.env(port) if callable(launch.env) else launch.env
            process = self.supervisor.spawn(
                server.name,
                launch.argv(port),
                log_path=server.folder / "server.log",
                env=env,
                cwd=launch.cwd,
                run_as=launch.run_as,
                shell=launch.shell,
                signal_group=launch.signal_group,
                redact=launch.redact,
                umask=launch.umask,
                **({} if launch.stop_signal is None else {"stop_signal": launch.stop_signal}),
            )
            try:
                probe = server.probe(Started(process, self.host, port))
                wait_ready(process, probe, timeout=server.timeout, what=server.name)
            except ServiceError as exc:
                in_use = address_in_use(process.tail())
                # Forgotten first: a server stopped on purpose is never taken for a dead one.
                self.supervisor.forget(process)
                process.stop()
                if in_use and server.port:
                    raise ServiceError(
                        f"{server.name}: port {server.port} is already in use by another"
                        " process; stop it, or drop `port` so testfleet picks a free one",
                        details=exc.details,
                    ) from None
                if in_use and attempt < attempts:
                    continue
                raise
            return Started(process, self.host, port)
        raise AssertionError("unreachable")

    def handles(self) -> list[Handle]:
        return list(self.supervisor.processes())

    def dead(self) -> list[Handle]:
        return list(self.supervisor.dead())

    def stop_all(self) -> None:
        self.supervisor.stop_all()
