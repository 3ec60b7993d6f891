"""MongoDB: one server per run with a database per lane (`isolation = "database"`), or a
server per lane (`"server"`); a replica set of one with `replica-set = true`, which
transactions and change streams need."""

from __future__ import annotations

from typing import Literal

from pydantic import StrictBool

from testfleet.binaries import Lookup
from testfleet.kinds.base import HOST, Kind
from testfleet.specs import Identifier, ServerSpec


class MongoSpec(ServerSpec):
    kind: Literal["mongodb"] = "mongodb"
    isolation: Literal["database", "server"] | None = None
    database: Identifier = "test"
    replica_set: StrictBool = False


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


KIND = Kind(
    name="mongodb",
    label="MongoDB",
    spec=MongoSpec,
    fields=("url", "host", "port", "database"),
    planned=planned,
    service="testfleet.services.mongodb:MongoService",
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
        'put MongoDB\'s mongod on PATH (or use backend = "docker")',
    ),
    image="mongo:8",
    reusable=True,
    inner_port=27017,
    drivers=("pymongo",),
)
