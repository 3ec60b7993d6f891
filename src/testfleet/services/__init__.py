"""Service kinds: one module each, behind the `Service` protocol in `base`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testfleet.config import AnyServiceSpec
from testfleet.services import command, nats, postgres, valkey, vault
from testfleet.services.base import Service, StackContext

SERVICE_KINDS: dict[str, Callable[[str, Any, StackContext], Service]] = {
    "postgres": postgres.PostgresService,
    "valkey": valkey.ValkeyService,
    "nats": nats.NatsService,
    "vault": vault.VaultService,
    "command": command.CommandService,
}

_PLANNED: dict[str, Callable[[Any], dict[str, str]]] = {
    "postgres": postgres.planned,
    "valkey": valkey.planned,
    "nats": nats.planned,
    "vault": vault.planned,
    "command": command.planned,
}


def planned_values(name: str, spec: AnyServiceSpec) -> dict[str, str]:
    """A service's placeholder values as lane 1 would see them, without starting it."""
    return _PLANNED[spec.kind](spec)
