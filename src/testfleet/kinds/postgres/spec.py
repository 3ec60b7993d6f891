"""What a `postgres` service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from testfleet.specs import Identifier, Seconds, ServerSpec, command_value, settings_of


class PostgresSpec(ServerSpec):
    kind: Literal["postgres"] = "postgres"
    isolation: Literal["database", "server"] | None = None
    database: Identifier = "test"
    user: Identifier = "testfleet"
    setup: Annotated[str | tuple[str, ...] | None, BeforeValidator(command_value)] = None
    settings: Annotated[dict[str, str | int | float | bool], settings_of(str, int, float, bool)] = (
        Field(default_factory=dict)
    )
    # Migrations of a large schema can take minutes; a hung one must still end the run.
    setup_timeout: Seconds = 600.0
