"""The env vars a lane exports: each service's defaults and `export` table, then the
project's own `env`, all expanded with that lane's placeholder values."""

from __future__ import annotations

from collections.abc import Mapping

from testfleet.config import TABLE, AnyServiceSpec, default_exports
from testfleet.placeholders import expand


def placeholder_values(
    own: Mapping[str, str] | None,
    others: Mapping[str, Mapping[str, str]],
    common: Mapping[str, str],
) -> dict[str, str]:
    """`{url}` for a service's own values, `{postgres.url}` for the others', plus `{lane}`..."""
    values = dict(common)
    for name, fields in others.items():
        values.update({f"{name}.{key}": value for key, value in fields.items()})
    values.update(own or {})
    return values


def service_exports(name: str, spec: AnyServiceSpec, values: Mapping[str, str]) -> dict[str, str]:
    templates = dict(default_exports(name, spec.kind)) if spec.export_defaults else {}
    templates.update(spec.export)
    where = f"{TABLE}.services.{name}.export"
    return {var: expand(t, values, where=f"{where}.{var}") for var, t in templates.items()}
