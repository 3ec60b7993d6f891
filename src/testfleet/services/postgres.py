"""PostgreSQL: one server per run with a template database that each lane clones
(`isolation = "database"`), or a server per lane copied from a prepared data directory
(`isolation = "server"`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from testfleet import readiness
from testfleet.backends.native import ManagedProcess, RunAs
from testfleet.config import PostgresSpec
from testfleet.envvars import placeholder_values, process_environ, service_exports
from testfleet.errors import ConfigError, ServiceError
from testfleet.services.base import HOST, ServiceView, StackContext, secret, start_on_free_port

# Safe for throwaway test data and several times faster: nothing is ever recovered.
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Autovacuum connecting to the template would make CREATE DATABASE ... TEMPLATE fail.
    "autovacuum": "off",
    "max_connections": "200",
    "listen_addresses": HOST,
}


def cache_root() -> Path:
    configured = os.environ.get("TESTFLEET_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "testfleet"


def _accessible_to(path: Path, run_as: RunAs) -> bool:
    """Whether `run_as` can reach and execute `path` (we are root; os.access asks for us)."""
    for part in [*reversed(path.parents), path]:
        info = part.stat()
        if info.st_uid == run_as.uid:
            needed = stat.S_IXUSR
        elif info.st_gid == run_as.gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            return False
    return True


def _copy_tree(source: Path, target: Path) -> None:
    """`cp -a` keeps owners and modes, which PostgreSQL checks on its data directory."""
    result = subprocess.run(
        ["cp", "-a", str(source), str(target)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ServiceError(f"cannot copy {source} to {target}: {result.stderr.strip()}")


class PostgresService:
    def __init__(self, name: str, spec: PostgresSpec, ctx: StackContext) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.password = secret()
        self.run_as = ctx.run_as
        binary = ctx.binaries[name]
        self.bin_dir = binary.path.resolve().parent
        self.major = int(binary.version().split(".")[0] or 0)
        self.template = (
            f"{spec.database}_template" if spec.isolation == "database" else spec.database
        )
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None
        self._admin_lock = threading.Lock()
        self._port = 0
        self._template_dir: Path | None = None

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.run_as is not None and not _accessible_to(self.bin_dir / "postgres", self.run_as):
            self.bin_dir = self._public_copy_of_install()
        folder = self._folder("template" if self.spec.isolation == "server" else "shared")
        if self.run_as is not None and not _accessible_to(folder.parent, self.run_as):
            raise ConfigError(
                f"{self.name}: PostgreSQL runs as '{self.run_as.name}' under root, and that user"
                f" cannot reach {folder.parent}; set run-dir to a directory others may enter"
                " (the default is /dev/shm)"
            )
        data = folder / "data"
        self._prepare_data_dir(data, folder)
        process, self._port = self._start_server(folder, data, "template")
        self._admin = self._connect(folder, self._port)
        with self._admin.cursor() as cur:
            cur.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(self.spec.user), sql.Literal(self.password)
                )
            )
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        self._run_setup(folder)
        if self.spec.isolation == "database":
            with self._admin.cursor() as cur:
                # Setup may leave connections behind; a template must have none.
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.template,),
                )
                cur.execute(
                    sql.SQL(
                        "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
                    ).format(sql.Identifier(self.template))
                )
        else:
            # A clean shutdown leaves a data directory every lane can copy and start at once.
            self._admin.close()
            self._admin = None
            process.stop_signal = signal.SIGINT
            process.stop()
            self.ctx.supervisor.forget(process)
            self._template_dir = data

    def _folder(self, label: str) -> Path:
        folder = self.ctx.service_dir(self.name) / label
        folder.mkdir(exist_ok=True, mode=0o700)
        if self.run_as is not None:
            os.chown(folder, self.run_as.uid, self.run_as.gid)
        return folder

    def _public_copy_of_install(self) -> Path:
        """Root's site-packages may be closed to the unprivileged user: copy the install once."""
        install = self.bin_dir.parent
        key = hashlib.sha256(str(install).encode()).hexdigest()[:12]
        target = Path("/var/tmp") / f"testfleet-postgres-{key}"
        if not (target / "bin" / "postgres").exists():
            staging = target.with_name(f"{target.name}.{os.getpid()}")
            _copy_tree(install, staging)
            subprocess.run(["chmod", "-R", "a+rX", str(staging)], check=True)
            try:
                staging.rename(target)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)  # another run got there first
        return target / "bin"

    def _prepare_data_dir(self, data: Path, folder: Path) -> None:
        """A copy of a cached initdb result (~50 ms), or initdb itself (~1 s) on first use."""
        uid = self.run_as.uid if self.run_as else os.getuid()
        key = hashlib.sha256(
            f"{self.bin_dir}|{self.major}|{self.spec.user}|{uid}".encode()
        ).hexdigest()[:16]
        cached = cache_root() / f"initdb-{key}"
        if cached.is_dir():
            _copy_tree(cached, data)
            return
        result = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                self.spec.user,
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            cwd=folder,
            check=False,
            user=self.run_as.uid if self.run_as else None,
            group=self.run_as.gid if self.run_as else None,
            extra_groups=[] if self.run_as else None,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"{self.name}: initdb failed with exit code {result.returncode}",
                details=(result.stdout + result.stderr)[-2000:],
            )
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            staging = cached.with_name(f".{cached.name}.{os.getpid()}")
            _copy_tree(data, staging)
            os.replace(staging, cached)
        except (OSError, ServiceError):
            pass  # no cache this time; the next run runs initdb again

    def _start_server(self, folder: Path, data: Path, label: str) -> tuple[ManagedProcess, int]:
        settings = {**TEST_SETTINGS, **{k: str(v) for k, v in self.spec.settings.items()}}
        if isinstance(self.spec.settings.get("fsync"), bool):
            settings["fsync"] = "on" if self.spec.settings["fsync"] else "off"

        def argv(port: int) -> list[str]:
            args = [
                str(self.bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(folder),
            ]
            for key, value in settings.items():
                args += ["-c", f"{key}={value}"]
            return args

        def probe(port: int, _: ManagedProcess) -> readiness.Probe:
            def check() -> None:
                # The template server has no password yet: ask over the unix socket. Lane
                # servers are asked the way tests will connect, password included.
                if label == "template":
                    conn = self._connect(folder, port)
                else:
                    conn = psycopg.connect(
                        host=HOST,
                        port=port,
                        user=self.spec.user,
                        password=self.password,
                        dbname=self.spec.database,
                        connect_timeout=2,
                    )
                with conn:
                    conn.execute("SELECT 1")

            return check

        return start_on_free_port(
            self.ctx,
            f"{self.name} ({label})",
            argv,
            probe,
            log_path=folder / "server.log",
            timeout=self.spec.start_timeout,
            cwd=folder,
            run_as=self.run_as,
            # Immediate shutdown: the data is thrown away, and the server still releases its
            # shared memory (a SIGKILL would leak it).
            stop_signal=signal.SIGQUIT,
        )

    def _connect(self, folder: Path, port: int) -> psycopg.Connection[tuple[object, ...]]:
        """The superuser over the unix socket, where authentication is trust."""
        return psycopg.connect(
            host=str(folder),
            port=port,
            user=self.spec.user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=2,
        )

    def _run_setup(self, folder: Path) -> None:
        if not self.spec.setup:
            return
        view = self._view(self._port, self.template)
        # Setup runs once for all lanes: it belongs to none of them (lane 0).
        values = placeholder_values(view.values, {}, self.ctx.common_values(0))
        env = {
            **process_environ(self.ctx.project.python),
            **service_exports(self.name, self.spec, values),
        }
        log_path = folder / "setup.log"
        with open(log_path, "wb") as log:
            result = subprocess.run(
                self.spec.setup,
                shell=isinstance(self.spec.setup, str),
                env=env,
                cwd=self.ctx.project.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            shown = (
                self.spec.setup if isinstance(self.spec.setup, str) else " ".join(self.spec.setup)
            )
            text = log_path.read_text(errors="replace").splitlines()[-15:]
            raise ServiceError(
                f"{self.name}: setup command failed with exit code {result.returncode}: {shown}",
                details="\n".join(text),
            )

    # -- lanes ---------------------------------------------------------------------------------

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        if self.spec.isolation == "server":
            assert self._template_dir is not None
            folder = self._folder(f"lane{lane}")
            data = folder / "data"
            _copy_tree(self._template_dir, data)
            _, port = self._start_server(folder, data, f"lane {lane}")
            return self._view(port, self.spec.database)
        database = f"{self.spec.database}_{lane}"
        strategy = sql.SQL(" STRATEGY FILE_COPY") if self.major >= 15 else sql.SQL("")
        assert self._admin is not None
        with self._admin_lock:
            self._admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
                    sql.Identifier(database), sql.Identifier(self.template), strategy
                )
            )
        return self._view(self._port, database)

    def _view(self, port: int, database: str) -> ServiceView:
        user, password = self.spec.user, self.password
        return ServiceView(
            self.name,
            "postgres",
            {
                "url": f"postgresql://{user}:{password}@{HOST}:{port}/{database}",
                "host": HOST,
                "port": str(port),
                "user": user,
                "password": password,
                "database": database,
            },
        )

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
