"""Redis: the same protocol, isolation and exports as Valkey, with Redis's own server (Debian's
`redis-server`, the `redis` image, or an external one) for suites that must test on Redis."""

from __future__ import annotations

from typing import Literal

from testfleet.binaries import Lookup
from testfleet.kinds import valkey
from testfleet.kinds.base import Kind, url_exports


class RedisSpec(valkey.ValkeySpec):
    kind: Literal["redis"] = "redis"  # type: ignore[assignment]


KIND = Kind(
    name="redis",
    label="Redis",
    spec=RedisSpec,
    fields=valkey.FIELDS,
    planned=valkey.planned,
    exports=url_exports,  # REDIS_URL for a service named redis
    service="testfleet.services.valkey:ValkeyService",
    isolation=valkey.ISOLATION,  # type: ignore[arg-type]
    extra=None,
    lookup=Lookup(
        "Redis",
        "redis-server",
        (),
        (),
        ("redis-server",),
        (),
        "",
        "apt-get install redis-server",
    ),
    image="redis:7",
    reusable=True,
    inner_port=6379,
)
