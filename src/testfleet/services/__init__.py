"""Service runtimes: one module each, behind the `Service` protocol in `base`, found through
each kind's record in `testfleet.kinds`."""

from __future__ import annotations

import importlib
from typing import Any

from testfleet.kinds import KINDS, AnyServiceSpec
from testfleet.services.base import Service, StackContext


def make_service(name: str, spec: AnyServiceSpec, ctx: StackContext) -> Service:
    """The runtime of a service's kind, imported only when a run uses that kind."""
    module, _, attribute = KINDS[spec.kind].service.partition(":")
    factory: Any = getattr(importlib.import_module(module), attribute)
    service: Service = factory(name, spec, ctx)
    return service


def planned_values(name: str, spec: AnyServiceSpec) -> dict[str, str]:
    """A service's placeholder values as lane 1 would see them, without starting it."""
    return KINDS[spec.kind].planned(spec)
