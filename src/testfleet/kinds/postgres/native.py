"""PostgreSQL's own server processes, run natively: the first one (its data directory made by
initdb, where the template is made) and, with `isolation = "server"`, one per lane started
from a copy of the first one's data directory after a clean shutdown."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from testfleet.backends.base import NativeLaunch, Probe, Server, Started
from testfleet.errors import ConfigError
from testfleet.files import private_dir
from testfleet.kinds.postgres.install import (
    accessible_to,
    copy_tree,
    initdb,
    public_copy_of_install,
)
from testfleet.kinds.postgres.spec import PostgresSpec
from testfleet.processes import ManagedProcess
from testfleet.service import HOST, StackContext

if TYPE_CHECKING:
    from collections.abc import Callable

    from testfleet.kinds.postgres.databases import Connection

    # (host, port, database) -> a probe that connects over TCP with the password.
    TcpProbe = Callable[[str, int, str], Probe]

# Safe for throwaway test data and several times faster: nothing is ever recovered.
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Autovacuum connecting to the template would make CREATE DATABASE ... TEMPLATE fail.
    "autovacuum": "off",
    "max_connections": "200",
    "listen_addresses": HOST,
    # Dynamic shared memory as files in the data directory, not /dev/shm segments: a server
    # killed with SIGKILL then leaves nothing behind outside the run directory.
    "dynamic_shared_memory_type": "mmap",
}


def settings(spec: PostgresSpec) -> dict[str, str]:
    """The server's settings: the test settings, then the config's own."""
    merged = {**TEST_SETTINGS, **{k: str(v) for k, v in spec.settings.items()}}
    if isinstance(spec.settings.get("fsync"), bool):
        merged["fsync"] = "on" if spec.settings["fsync"] else "off"
    return merged


class NativeServers:
    """Starts PostgreSQL servers of the service `name` as processes of the run (as an
    unprivileged account under root), and probes them the way tests connect."""

    def __init__(
        self, name: str, spec: PostgresSpec, ctx: StackContext, *, tcp_probe: TcpProbe
    ) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.run_as = ctx.run_as
        self.bin_dir = ctx.binaries[name].path.resolve().parent
        self._tcp_probe = tcp_probe
        self.template_data: Path | None = None

    def start_first(self) -> tuple[Started, Path]:
        """The server the template is made on (the shared one with a database per lane),
        and its folder (where its socket is)."""
        if self.run_as is not None and not accessible_to(self.bin_dir / "postgres", self.run_as):
            self.bin_dir = public_copy_of_install(self.bin_dir, self.run_as)
        folder = self.folder("template" if self.spec.isolation == "server" else "shared")
        if self.run_as is not None and not accessible_to(folder.parent, self.run_as):
            raise ConfigError(
                f"{self.name}: PostgreSQL runs as '{self.run_as.name}' under root, and that user"
                f" cannot reach {folder.parent}; set run-dir to a directory others may enter"
                " (the default is /dev/shm)"
            )
        data = folder / "data"
        initdb(self.bin_dir, data, user=self.spec.user, run_as=self.run_as, what=self.name)
        return self.start(folder, data, "template"), folder

    def keep_as_template(self, started: Started, folder: Path) -> None:
        """Stop the first server cleanly: its data directory is what every lane's server
        starts from (a copy each, started at once)."""
        process = started.handle
        assert isinstance(process, ManagedProcess)
        process.stop_signal = signal.SIGINT
        process.stop()
        self.ctx.supervisor.forget(process)
        self.template_data = folder / "data"

    def start_for_lane(self, lane: int) -> Started:
        assert self.template_data is not None
        folder = self.folder(f"lane{lane}")
        data = folder / "data"
        copy_tree(self.template_data, data)
        return self.start(folder, data, f"lane {lane}")

    def folder(self, label: str) -> Path:
        folder = private_dir(self.ctx.service_dir(self.name, traversable=True) / label)
        if self.run_as is not None:
            os.chown(folder, self.run_as.uid, self.run_as.gid)
        return folder

    def start(self, folder: Path, data: Path, label: str) -> Started:
        # A configured port belongs to the server the tests reach: the shared one, or with
        # isolation = "server" each lane's (the template server is never reached by tests).
        fixed = (label == "template") == (self.spec.isolation == "database")
        merged = settings(self.spec)
        # A unix socket only where testfleet itself connects over it (the first server: the
        # superuser, with trust, makes the template there). A lane's server has none:
        # a path in the run directory is reachable from every lane's network namespace,
        # and lanes share the user and password, so it would be a way into another lane's
        # server. Lanes connect over TCP, which stays inside their namespace.
        sockets = str(folder) if label == "template" else ""

        def argv(port: int) -> list[str]:
            args = [
                str(self.bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                sockets,
            ]
            for key, value in merged.items():
                args += ["-c", f"{key}={value}"]
            return args

        def probe(at: Started) -> Probe:
            # The template server has no password yet: ask over the unix socket. Lane
            # servers are asked the way tests will connect, password included.
            if label != "template":
                return self._tcp_probe(at.host, at.port, self.spec.database)

            def check(left: float) -> None:
                with self.connect(folder, at.port) as conn:
                    conn.execute("SELECT 1")

            return check

        server = Server(
            f"{self.name} ({label})",
            folder,
            probe,
            timeout=self.spec.start_timeout,
            port=self.spec.port_number if fixed else None,
            native=NativeLaunch(
                argv,
                cwd=folder,
                run_as=self.run_as,
                # Immediate shutdown: the data is thrown away, and the server still releases
                # its shared memory (a SIGKILL would leak it).
                stop_signal=signal.SIGQUIT,
            ),
        )
        return self.ctx.start(self.spec, server)

    def connect(self, folder: Path, port: int) -> Connection:
        """The superuser over the unix socket, where authentication is trust."""
        import psycopg

        return psycopg.connect(
            host=str(folder),
            port=port,
            user=self.spec.user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=2,
        )
