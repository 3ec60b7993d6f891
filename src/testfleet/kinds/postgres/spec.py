"""What a `postgres` service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from testfleet.kinds.base import export_sets
from testfleet.specs import Identifier, Seconds, ServerSpec, command_value, settings_of

# libpq (psql, psycopg, asyncpg, SQLAlchemy's defaults) reads these when a suite connects
# without a URL: `export = ["libpq"]` asks for them.
LIBPQ_EXPORTS = {
    "PGHOST": "{host}",
    "PGPORT": "{port}",
    "PGUSER": "{user}",
    "PGPASSWORD": "{password}",
    "PGDATABASE": "{database}",
}


class PostgresSpec(ServerSpec):
    kind: Literal["postgres"] = "postgres"
    export: Annotated[dict[str, str], export_sets({"libpq": LIBPQ_EXPORTS})] = Field(
        default_factory=dict
    )
    isolation: Literal["database", "server"] | None = None
    database: Identifier = "test"
    user: Identifier = "testfleet"
    setup: Annotated[str | tuple[str, ...] | None, BeforeValidator(command_value)] = None
    settings: Annotated[dict[str, str | int | float | bool], settings_of(str, int, float, bool)] = (
        Field(default_factory=dict)
    )
    # Migrations of a large schema can take minutes; a hung one must still end the run.
    setup_timeout: Seconds = 600.0
