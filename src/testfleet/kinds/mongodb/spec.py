"""What a `mongodb` service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

from typing import Literal

from pydantic import StrictBool

from testfleet.specs import Identifier, ServerSpec


class MongoSpec(ServerSpec):
    kind: Literal["mongodb"] = "mongodb"
    isolation: Literal["database", "server"] | None = None
    database: Identifier = "test"
    replica_set: StrictBool = False
