"""NATS with JetStream: a server per lane, each with its own store. One external server cannot
keep lanes apart, so it serves one lane unless `isolation = "shared"` says that is meant."""

from __future__ import annotations

from typing import TYPE_CHECKING

from testfleet.binaries import Lookup
from testfleet.kinds.base import Kind
from testfleet.kinds.nats.spec import NatsSpec
from testfleet.ports import HOST

if TYPE_CHECKING:
    from testfleet.service import Service, StackContext


def planned(spec: NatsSpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    port = str(spec.port_number or 4222)
    return {"url": f"nats://{HOST}:{port}", "host": HOST, "port": port, "token": ""}


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
)
