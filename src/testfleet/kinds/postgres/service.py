"""PostgreSQL: one server per run with a template database that each lane clones
(`isolation = "database"`: natively, in a container, or on an external server), or a server
per lane copied from a prepared data directory (`isolation = "server"`, natively).

The native servers are native.py's, the template and the clones databases.py's; this module
starts the one or the other and hands each lane its view.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from testfleet import readiness
from testfleet.backends.base import Address, ContainerLaunch, ExternalLaunch, Probe, Server
from testfleet.envvars import placeholder_environ, placeholder_values, process_environ
from testfleet.errors import ConfigError, ServiceError
from testfleet.kinds.base import Kind
from testfleet.kinds.postgres.databases import Databases
from testfleet.kinds.postgres.native import NativeServers, settings
from testfleet.kinds.postgres.spec import LIBPQ_EXPORTS, PostgresSpec
from testfleet.placeholders import expand
from testfleet.processes import describe_exit
from testfleet.service import HOST, ServiceView, StackContext

if TYPE_CHECKING:
    from testfleet.kinds.postgres.databases import Connection

# In a container: data on a tmpfs the image's own user can write into.
CONTAINER_DATA = "/var/lib/postgresql"
URL_FORM = "postgresql://user:password@host:port/database"
# What libpq says when the server refuses the url's password (or its lack of one): waiting
# cannot change it. Its words up to the line's end, the user name with them.
PASSWORD_REFUSED = re.compile(
    r"[^:\n]*authentication failed for user \"[^\"\n]*\"|no password supplied"
)


def _address(url: str) -> Address:
    """An external server's url, read as libpq reads it (a URL, or `host=... port=...`)."""
    import psycopg

    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        # The parser's message quotes the URL, password and all: name the problem only.
        raise ValueError(f"not a PostgreSQL URL (want {URL_FORM}): {type(exc).__name__}") from None
    return Address(
        url=url,
        scheme="postgresql",
        host=str(parts.get("host") or HOST),
        port=int(parts.get("port") or 5432),
        user=str(parts.get("user") or ""),
        password=str(parts.get("password") or ""),
        path=str(parts.get("dbname") or ""),
    )


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
        external = spec.backend_name == "external"
        # Ours get a password per run (or per kept container); an external one's is its own.
        self.password = "" if external else ctx.service_secret(name, spec)
        self.user = spec.user
        self.native = (
            NativeServers(name, spec, ctx, tcp_probe=self._tcp_probe)
            if spec.backend_name == "native"
            else None
        )
        self._host = HOST
        self._port = 0
        self._databases: Databases | None = None

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.native is not None:
            self._start_native(self.native)
        else:
            self._start_shared()

    def _start_native(self, native: NativeServers) -> None:
        from psycopg import sql

        started, folder = native.start_first()
        self._port = started.port
        admin = native.connect(folder, started.port)
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(self.spec.user), sql.Literal(self.password)
            )
        )
        shared = self.spec.isolation == "database"
        # A server per lane copies the template server's data: its database has the name
        # lanes use.
        template = None if shared else self.spec.database
        # Kept from here on, so that stop() closes its connection whatever happens next.
        self._databases = Databases(self.name, admin, name=self.spec.database, template=template)
        self._databases.create_template(
            lambda db: self._run_setup(folder, db), seal=shared, mark=True
        )
        if shared:
            return
        # A clean shutdown leaves a data directory every lane can copy and start at once.
        self._databases.close()
        self._databases = None
        native.keep_as_template(started, folder)

    def _start_shared(self) -> None:
        """One server for every lane, in a container or someone else's: a database each."""
        import psycopg

        merged = {**settings(self.spec), "listen_addresses": "*"}
        command = ["postgres"]
        for key, value in merged.items():
            command += ["-c", f"{key}={value}"]
        server = Server(
            f"{self.name} (shared)",
            self.ctx.folder(self.name, "shared"),
            lambda at: (
                self._url_probe(at.address.url)
                if at.address
                else self._tcp_probe(at.host, at.port, "postgres")
            ),
            timeout=self.spec.start_timeout,
            port=self.spec.port_number,
            container=ContainerLaunch(
                image=self.spec.image or self.kind.image or "",
                inner_port=self.kind.inner_port or 5432,
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
            external=ExternalLaunch(self.name, self.spec.url or "", self.where, self._reach),
            reset=self._drop_earlier_databases,
        )
        started = self.ctx.start(self.spec, server)
        self._host, self._port = started.host, started.port
        address = started.address
        if address is None:
            admin = psycopg.connect(
                host=self._host,
                port=self._port,
                user=self.user,
                password=self.password,
                dbname="postgres",
                autocommit=True,
                connect_timeout=5,
            )
            self._databases = Databases(self.name, admin, name=self.spec.database)
        else:
            self.user = address.user or self.user
            self.password = address.password
            # Names carry the run id's random part: other runs and the server's own
            # databases are never touched; it keeps them within PostgreSQL's 63 bytes
            # (41 + 9 + "_template").
            name = f"{self.spec.database}_tf{self.ctx.run_id.rsplit('-', 1)[-1]}"
            record = (self.ctx.run_dir.path, address.url)
            admin = self._creator(address.url)
            self._databases = Databases(self.name, admin, name=name, foreign=True, record=record)
        folder = self.ctx.folder(self.name, "setup")
        # Not marked IS_TEMPLATE: an external server's user may not be allowed to, and a kept
        # container's next run drops it (which a marked template refuses).
        self._databases.create_template(
            lambda db: self._run_setup(folder, db), seal=True, mark=False
        )

    def _reach(self, url: str) -> Address:
        """An external server's url, read before it is waited for: its password is a
        secret from then on (a command service's log may print it)."""
        address = _address(url)
        if address.password:
            self.ctx.secrets.append(address.password)
        return address

    def _creator(self, url: str) -> Connection:
        """The admin connection to an external server, as a user who may create databases."""
        import psycopg

        try:
            admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
            row = admin.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        except psycopg.Error as exc:
            raise ServiceError(f"{self.name}: cannot connect as {self.user}: {exc}") from None
        if not row or not row[0]:
            admin.close()
            raise ServiceError(
                f"{self.name}: user {self.user} may not create databases, and each lane needs"
                f" its own; ALTER ROLE {self.user} CREATEDB on that server, or use a user who may"
            )
        return admin

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
            pattern = re.compile(rf"^{re.escape(self.spec.database)}_(template|\d+)$")
            names = [str(row[0]) for row in admin.execute("SELECT datname FROM pg_database")]
            for name in filter(pattern.match, names):
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

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

    @staticmethod
    def _url_probe(url: str) -> Probe:
        """An external server: ready when its own url connects."""

        def check(left: float) -> None:
            import psycopg

            try:
                with psycopg.connect(url, connect_timeout=max(1, min(5, int(left)))):
                    pass
            except psycopg.OperationalError as exc:
                refusal = PASSWORD_REFUSED.search(str(exc))
                if refusal is not None:
                    raise readiness.AuthFailed(refusal.group(0).strip()) from None
                raise

        return check

    def _run_setup(self, folder: Path, database: str) -> None:
        setup = self.spec.setup
        if not setup:
            return
        view = self._view(self._port, database)
        # Setup runs once for all lanes: it belongs to none of them (lane 0).
        values = placeholder_values(view.values, {}, self.ctx.common_values(0))
        env = {
            **process_environ(self.ctx.python),
            # Setup is a command written for testfleet, not the suite: psql or a migration
            # tool in it reaches the template with libpq's defaults, as it always could (the
            # lanes get PG* only with `export = ["libpq"]`).
            **{var: view.values[field[1:-1]] for var, field in LIBPQ_EXPORTS.items()},
            **self.ctx.exports(self.name, values),
            # What a string setup's placeholders refer to (`{url}` -> "${TESTFLEET_URL?}").
            **placeholder_environ(values),
        }
        where = f"{self.where}.setup"
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
        if self._databases is None:  # a server per lane
            assert self.native is not None
            return self._view(self.native.start_for_lane(lane).port, self.spec.database)
        return self._view(self._port, self._databases.clone(lane))

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
        """The lane's database is dropped, so the lane can be cloned afresh (a server per
        lane goes with the lane)."""
        if self._databases is not None:
            self._databases.forget(lane)

    def stop(self) -> None:
        """On a server testfleet does not own, drop the databases this run made (and only
        those); servers of ours go with their backend."""
        if self._databases is not None:
            self._databases.close()
