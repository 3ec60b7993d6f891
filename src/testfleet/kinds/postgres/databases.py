"""The template database every lane clones, and the lanes' databases, on one PostgreSQL
server reached through an admin connection: a server of ours (native or a container) or an
external one.

On a server testfleet does not own, every name carries the run's id, each database is
written down (`leftovers`) before it is made, and exactly those are dropped afterwards; on a
server of ours, everything goes with the server.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from testfleet import leftovers
from testfleet.errors import ServiceError

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[tuple[object, ...]]


class Databases:
    """What lanes get on one server: `name`_N for lane N, cloned from `template` (by default
    `name`_template). `foreign` when the server is someone else's; then `record` is where
    what is made gets written down first: (run directory, server url)."""

    def __init__(
        self,
        service: str,
        admin: Connection,
        *,
        name: str,
        template: str | None = None,
        foreign: bool = False,
        record: tuple[Path, str] | None = None,
    ) -> None:
        self.service = service
        self.admin = admin
        self.major = admin.info.server_version // 10000
        self.prefix = name
        self.foreign = foreign
        self.template = template or f"{name}_template"
        self._record = record
        self._lock = threading.Lock()
        self._created: list[str] = []
        self._stopping = False

    def database(self, lane: int) -> str:
        return f"{self.prefix}_{lane}"

    def create_template(self, setup: Callable[[str], None], *, seal: bool, mark: bool) -> None:
        """The template every lane starts from, with `setup` run on it once. `seal`: lanes
        clone it, so it must keep no connections; `mark` flags it as a template too."""
        from psycopg import sql

        self._remember(self.template)
        self.admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        setup(self.template)
        if not seal:
            return
        # Setup may leave connections behind; a template must have none.
        self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.template,),
        )
        flags = "IS_TEMPLATE true ALLOW_CONNECTIONS false" if mark else "ALLOW_CONNECTIONS false"
        self.admin.execute(
            sql.SQL("ALTER DATABASE {} WITH " + flags).format(sql.Identifier(self.template))
        )

    def clone(self, lane: int) -> str:
        """The lane's database, a copy of the template (~20-35 ms on tmpfs)."""
        from psycopg import sql

        database = self.database(lane)
        strategy = sql.SQL(" STRATEGY FILE_COPY") if self.major >= 15 else sql.SQL("")
        with self._lock:
            if self._stopping:
                raise ServiceError(f"{self.service}: not provisioned, the run is stopping")
            # Recorded first: a teardown that comes while it is made still drops it.
            self._remember(database)
            self.admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
                    sql.Identifier(database), sql.Identifier(self.template), strategy
                )
            )
        return database

    def forget(self, lane: int) -> None:
        """The lane's database is dropped, so the lane can be cloned afresh."""
        database = self.database(lane)
        with self._lock:
            if self._stopping or database not in self._created:
                return
            self._drop(database)
            self._created.remove(database)

    def close(self) -> None:
        """On a server testfleet does not own, drop the databases this run made (and only
        those); then the admin connection goes."""
        with self._lock:
            self._stopping = True
            if self.foreign:
                for database in reversed(self._created):
                    with contextlib.suppress(Exception):  # the server may be gone already
                        self._drop(database)
            self._created.clear()
            self.admin.close()

    def _remember(self, database: str) -> None:
        """A database this run makes: dropped by close(), or by the reaper after a SIGKILL
        when the server is not ours (servers of ours go with the run)."""
        self._created.append(database)
        if self.foreign and self._record is not None:
            run_dir, url = self._record
            leftovers.record(run_dir, "postgres", url, database)

    def _drop(self, database: str) -> None:
        from psycopg import sql

        if self.major < 13:  # no FORCE: end its sessions first
            self.admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
        force = sql.SQL(" WITH (FORCE)") if self.major >= 13 else sql.SQL("")
        self.admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(database), force)
        )
