"""Neo4j: a server per lane (Community has one database); `isolation = "database"` gives each
lane a database of one server, which needs Enterprise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from testfleet.binaries import Lookup
from testfleet.kinds.base import Kind, env_prefix
from testfleet.kinds.neo4j.spec import Neo4jSpec
from testfleet.leftovers import SECONDS
from testfleet.ports import HOST

if TYPE_CHECKING:
    from testfleet.service import Service, StackContext


def exports(name: str) -> dict[str, str]:
    prefix = env_prefix(name)
    return {
        f"{prefix}_URI": "{url}",
        f"{prefix}_USER": "{user}",
        f"{prefix}_PASSWORD": "{password}",
    }


def planned(spec: Neo4jSpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    port = str(spec.port_number or 7687)
    database = "lane1" if spec.isolation_mode == "database" else "neo4j"
    return {
        "url": f"bolt://{HOST}:{port}",
        "host": HOST,
        "port": port,
        "user": spec.user,
        "password": "",
        "database": database,
    }


def runtime(name: str, spec: Neo4jSpec, ctx: StackContext, kind: Kind) -> Service:
    from testfleet.kinds.neo4j.service import Neo4jService

    return Neo4jService(name, spec, ctx, kind)


def drop_leftover(entry: Mapping[str, Any]) -> None:
    """A database a killed run made on an external server."""
    from neo4j import GraphDatabase

    auth = (entry["user"], entry["password"]) if entry.get("password") else None
    with (
        GraphDatabase.driver(entry["url"], auth=auth, connection_timeout=SECONDS) as driver,
        driver.session(database="system") as session,
    ):
        session.run(f"DROP DATABASE `{entry['name']}` IF EXISTS").consume()


KIND = Kind(
    name="neo4j",
    label="Neo4j",
    spec=Neo4jSpec,
    fields=("url", "host", "port", "user", "password", "database"),
    planned=planned,
    exports=exports,
    runtime=runtime,
    isolation={
        "native": ("server", "database"),
        "docker": ("server", "database"),
        "external": ("none", "shared", "database"),
    },
    extra="neo4j",
    lookup=Lookup(
        "Neo4j",
        "neo4j",
        (),
        (),
        ("neo4j",),
        (),
        "neo4j",
        # No wheel brings a server: testfleet[neo4j] is its driver only.
        "no pip package brings a Neo4j server (testfleet[neo4j] is the neo4j driver only):"
        ' put Neo4j\'s bin/neo4j on PATH, use backend = "docker" (image neo4j:5), or'
        ' backend = "external" with url = "{env.NEO4J_URI}"',
    ),
    image="neo4j:5",
    reusable=True,
    inner_port=7687,
    drivers=("neo4j",),
    unrecycled=frozenset(("database",)),
    drop_leftover=drop_leftover,
)
