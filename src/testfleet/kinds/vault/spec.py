"""What a `vault` service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

from typing import Literal

from testfleet.specs import ServerSpec


class VaultSpec(ServerSpec):
    kind: Literal["vault"] = "vault"
    isolation: Literal["server", "mount", "shared"] | None = None
    # An external server's token, like `url` usually "{env.VAULT_TOKEN}".
    token: str | None = None
