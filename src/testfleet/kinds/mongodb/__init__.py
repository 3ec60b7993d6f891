"""MongoDB: one server per run with a database per lane (`isolation = "database"`), or a
server per lane (`"server"`); a replica set of one with `replica-set = true`, which
transactions and change streams need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from testfleet.binaries import Lookup
from testfleet.kinds.base import Kind
from testfleet.kinds.mongodb.spec import MongoSpec
from testfleet.leftovers import SECONDS
from testfleet.ports import HOST

if TYPE_CHECKING:
    from testfleet.service import Service, StackContext


def planned(spec: MongoSpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    database = f"{spec.database}_1" if spec.isolation_mode == "database" else spec.database
    port = str(spec.port_number or 27017)
    # A replica set of one is reached directly: its member address is the server's own view.
    query = "?directConnection=true" if spec.replica_set else ""
    return {
        "url": f"mongodb://{HOST}:{port}/{database}{query}",
        "host": HOST,
        "port": port,
        "database": database,
    }


def runtime(name: str, spec: MongoSpec, ctx: StackContext, kind: Kind) -> Service:
    from testfleet.kinds.mongodb.service import MongoService

    return MongoService(name, spec, ctx, kind)


def drop_leftover(entry: Mapping[str, Any]) -> None:
    """A database a killed run handed out on an external server."""
    from pymongo import MongoClient

    ms = SECONDS * 1000
    client: MongoClient[dict[str, Any]] = MongoClient(entry["url"], serverSelectionTimeoutMS=ms)
    with client:
        client.drop_database(entry["name"])


KIND = Kind(
    name="mongodb",
    label="MongoDB",
    spec=MongoSpec,
    fields=("url", "host", "port", "database"),
    planned=planned,
    runtime=runtime,
    isolation={
        "native": ("database", "server"),
        "docker": ("database", "server"),
        "external": ("database",),
    },
    extra="mongodb",
    lookup=Lookup(
        "MongoDB",
        "mongod",
        (),
        (),
        ("mongod",),
        (),
        "mongodb",
        # No wheel brings a server: testfleet[mongodb] is its driver only.
        "no pip package brings a MongoDB server (testfleet[mongodb] is the pymongo driver"
        ' only): put MongoDB\'s mongod on PATH, use backend = "docker" (image mongo:8), or'
        ' backend = "external" with url = "{env.MONGODB_URL}"',
    ),
    image="mongo:8",
    reusable=True,
    inner_port=27017,
    drivers=("pymongo",),
    unrecycled=frozenset(("database",)),
    drop_leftover=drop_leftover,
)
