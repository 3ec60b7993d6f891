"""What a `valkey` (or `redis`) service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool

from testfleet.specs import ServerSpec, settings_of

# Valkey's and Redis's default `databases` count: with isolation = "database" each lane
# takes one.
DB_NUMBERS = 16


class ValkeySpec(ServerSpec):
    kind: Literal["valkey"] = "valkey"
    isolation: Literal["server", "database", "shared"] | None = None
    password: StrictBool = False
    settings: Annotated[dict[str, str | int], settings_of(str, int)] = Field(default_factory=dict)


class RedisSpec(ValkeySpec):
    kind: Literal["redis"] = "redis"  # type: ignore[assignment]
