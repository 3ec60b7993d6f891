"""What a `nats` service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

from typing import Literal

from pydantic import StrictBool

from testfleet.specs import ServerSpec


class NatsSpec(ServerSpec):
    kind: Literal["nats"] = "nats"
    isolation: Literal["server", "none", "shared"] | None = None
    jetstream: StrictBool = True
    token: StrictBool = False
