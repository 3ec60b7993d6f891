"""What a `neo4j` service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

from typing import Literal

from testfleet.specs import ServerSpec


class Neo4jSpec(ServerSpec):
    kind: Literal["neo4j"] = "neo4j"
    isolation: Literal["server", "database", "none", "shared"] | None = None
    user: str = "neo4j"
    # An external server's password, usually "{env.NEO4J_PASSWORD}".
    password: str | None = None
