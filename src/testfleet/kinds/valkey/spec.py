"""What a `valkey` (or `redis`) service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictBool

from testfleet.kinds.base import export_sets
from testfleet.specs import ServerSpec, settings_of

# Valkey's and Redis's default `databases` count: with isolation = "database" each lane
# takes one.
DB_NUMBERS = 16
# Frameworks and clients read REDIS_URL (Rails, Celery, RQ, ...); for a service named anything
# but `redis` it is an alias a suite asks for: `export = ["redis"]`. A suite may test that it
# is unset, and a second server of the config may own it.
EXPORT_SETS = {"redis": {"REDIS_URL": "{url}"}}
# Stands for a run's credential where nothing is started (planning): the shape of a real one.
PLANNED_SECRET = "0" * 32


def former_opt_in(key: str) -> AfterValidator:
    """The key that asked for a credential when none was the default (valkey's `password`,
    nats's `token`): `true` is the default now, read and forgotten (so a config with it is the
    same stack as one without); `false` would now mean nothing, so it is refused."""

    def check(value: bool | None) -> None:
        if value is False:
            raise ValueError(
                f"servers get a {key} by default now, which {key} = false does not turn off;"
                f" write auth = false to serve clients without one"
            )

    return AfterValidator(check)


class ValkeySpec(ServerSpec):
    kind: Literal["valkey"] = "valkey"
    isolation: Literal["server", "database", "shared"] | None = None
    # A random password per run on servers testfleet runs, in the exported URLs: other local
    # users and other runs reach 127.0.0.1 too. `false` for suites that hard-code a
    # password-less connection.
    auth: StrictBool = True
    password: Annotated[StrictBool | None, former_opt_in("password")] = None
    settings: Annotated[dict[str, str | int], settings_of(str, int)] = Field(default_factory=dict)
    export: Annotated[dict[str, str], export_sets(EXPORT_SETS)] = Field(default_factory=dict)


class RedisSpec(ValkeySpec):
    kind: Literal["redis"] = "redis"  # type: ignore[assignment]
