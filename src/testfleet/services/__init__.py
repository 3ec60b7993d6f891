"""Service kinds: one module each, behind the `Service` protocol in `base`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testfleet.services.base import Service, StackContext
from testfleet.services.command import CommandService
from testfleet.services.nats import NatsService
from testfleet.services.postgres import PostgresService
from testfleet.services.valkey import ValkeyService
from testfleet.services.vault import VaultService

SERVICE_KINDS: dict[str, Callable[[str, Any, StackContext], Service]] = {
    "postgres": PostgresService,
    "valkey": ValkeyService,
    "nats": NatsService,
    "vault": VaultService,
    "command": CommandService,
}
