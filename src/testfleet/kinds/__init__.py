"""The registry of service kinds, one folder each: `kinds/<kind>/spec.py` (the keys a service
of the kind accepts), `service.py` (its runtime) and `__init__.py` (its record, `KIND`, which
points to the runtime). The config schema, placeholders, default exports, binaries, images,
lane limits, the up's recycling, the reaper and `doctor` read the records from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from testfleet.kinds import command, mongodb, nats, neo4j, postgres, redis, valkey, vault
from testfleet.kinds.base import Kind
from testfleet.specs import ServerSpec, ServiceSpec

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

# The kinds `--with` can start from their name alone: servers testfleet knows how to run. A
# `command` service is the user's own program, which only its declaration can name.
SERVER_KINDS: tuple[str, ...] = tuple(
    name for name, record in KINDS.items() if issubclass(record.spec, ServerSpec)
)
# Other names users give a kind on the command line: the org workflow's toggles say
# `enable-postgresql`.
ALIASES: dict[str, str] = {"postgresql": "postgres"}


def credential_signs(services: Mapping[str, ServiceSpec]) -> dict[str, re.Pattern[str]]:
    """The services whose servers testfleet starts with a per-run credential, each with what
    its clients say when they connect without it."""
    signs = {}
    for name, spec in services.items():
        sign = KINDS[spec.kind].unauthenticated
        if sign is not None and getattr(spec, "auth", False) and spec.backend_name != "external":
            signs[name] = sign
    return signs


def missed_exports(services: Mapping[str, ServiceSpec]) -> dict[str, tuple[str, re.Pattern[str]]]:
    """The services that could export a set of variables their clients' library reads by
    default (`export = ["libpq"]`) and were not asked to, each with the set's name and what
    clients say when they look where the library does without them; a set none of whose
    variables any service exports, and only its first service (two would collide)."""
    exported = {var for spec in services.values() for var in spec.export}
    missed: dict[str, tuple[str, re.Pattern[str]]] = {}
    for name, spec in services.items():
        record = KINDS[spec.kind]
        for wanted, sign in record.missed_exports.items():
            taken = any(wanted == other for other, _ in missed.values())
            if not taken and not exported & set(record.export_sets[wanted]):
                missed[name] = (wanted, sign)
    return missed


if TYPE_CHECKING:
    from testfleet.specs import ServiceSpec as AnyServiceSpec
else:
    # pydantic picks the model by `kind`; built from the registry so it cannot drift.
    AnyServiceSpec = Annotated[
        Union[tuple(record.spec for record in KINDS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]

__all__ = [
    "ALIASES",
    "KINDS",
    "SERVER_KINDS",
    "AnyServiceSpec",
    "Kind",
    "credential_signs",
    "missed_exports",
]
