"""What a `nats` service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import StrictBool

from testfleet.kinds.valkey.spec import former_opt_in
from testfleet.specs import ServerSpec


class NatsSpec(ServerSpec):
    kind: Literal["nats"] = "nats"
    isolation: Literal["server", "none", "shared"] | None = None
    jetstream: StrictBool = True
    # A random token per run on servers testfleet runs, in the exported URLs (as Valkey's
    # password); `false` for suites that hard-code a connection without one.
    auth: StrictBool = True
    token: Annotated[StrictBool | None, former_opt_in("token")] = None
