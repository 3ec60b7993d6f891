"""The registry of service kinds, one folder each: `kinds/<kind>/spec.py` (the keys a service
of the kind accepts), `service.py` (its runtime) and `__init__.py` (its record, `KIND`, which
points to the runtime). The config schema, placeholders, default exports, binaries, images,
lane limits, the up's recycling, the reaper and `doctor` read the records from here.
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
