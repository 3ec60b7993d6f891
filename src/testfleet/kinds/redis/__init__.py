"""Redis: the same protocol, isolation, exports and runtime as Valkey, with Redis's own server
(Debian's `redis-server`, the `redis` image, or an external one) for suites that must test on
Redis."""

from __future__ import annotations

from testfleet.binaries import Lookup
from testfleet.kinds import valkey
from testfleet.kinds.base import Kind, url_exports
from testfleet.kinds.valkey.spec import EXPORT_SETS, RedisSpec

KIND = Kind(
    name="redis",
    label="Redis",
    spec=RedisSpec,
    fields=valkey.FIELDS,
    planned=valkey.planned,
    exports=url_exports,  # REDIS_URL for a service named redis
    runtime=valkey.runtime,
    isolation=valkey.ISOLATION,
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
    slots=valkey.SLOTS,
    unauthenticated=valkey.REFUSED_WITHOUT_AUTH,
    export_sets=EXPORT_SETS,
)
