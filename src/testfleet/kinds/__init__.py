"""The registry of service kinds, built from each kind's own module.

Adding a kind is one module with a `KIND` record (and its runtime under `services/`); the
config schema, placeholders, default exports, binaries, images and `doctor` read it from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from testfleet.kinds import command, mongodb, nats, neo4j, postgres, redis, valkey, vault
from testfleet.kinds.base import Kind

KINDS: dict[str, Kind] = {
    record.name: record
    for record in (
        postgres.KIND,
        mongodb.KIND,
        valkey.KIND,
        redis.KIND,
        nats.KIND,
        vault.KIND,
        neo4j.KIND,
        command.KIND,
    )
}

if TYPE_CHECKING:
    from testfleet.specs import ServiceSpec as AnyServiceSpec
else:
    # pydantic picks the model by `kind`; built from the registry so it cannot drift.
    AnyServiceSpec = Annotated[
        Union[tuple(record.spec for record in KINDS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]

__all__ = ["KINDS", "AnyServiceSpec", "Kind"]
