"""NATS with JetStream: a server per lane, each with its own store. One external server cannot
keep lanes apart, so it serves one lane unless `isolation = "shared"` says that is meant."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from testfleet.binaries import Lookup
from testfleet.kinds.base import Kind
from testfleet.kinds.nats.spec import NatsSpec
from testfleet.kinds.valkey.spec import PLANNED_SECRET
from testfleet.ports import HOST

if TYPE_CHECKING:
    from testfleet.service import Service, StackContext


def planned(spec: NatsSpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    port = str(spec.port_number or 4222)
    token = PLANNED_SECRET if spec.auth and spec.backend_name != "external" else ""
    url = f"nats://{f'{token}@' if token else ''}{HOST}:{port}"
    return {"url": url, "host": HOST, "port": port, "token": token}


# What the server says to a client that connects without the token (nats-py raises it as
# `nats: 'Authorization Violation'`).
REFUSED_WITHOUT_AUTH = re.compile(r"Authorization Violation")


def runtime(name: str, spec: NatsSpec, ctx: StackContext, kind: Kind) -> Service:
    from testfleet.kinds.nats.service import NatsService

    return NatsService(name, spec, ctx, kind)


KIND = Kind(
    name="nats",
    label="NATS",
    spec=NatsSpec,
    fields=("url", "host", "port", "token"),
    planned=planned,
    runtime=runtime,
    isolation={"native": ("server",), "docker": ("server",), "external": ("none", "shared")},
    extra="nats",
    lookup=Lookup(
        "NATS",
        "nats-server",
        (),
        ("nats-server",),
        ("nats-server",),
        (),
        "nats",
        "apt-get install nats-server",
    ),
    image="nats:2",
    inner_port=4222,
    unauthenticated=REFUSED_WITHOUT_AUTH,
)
