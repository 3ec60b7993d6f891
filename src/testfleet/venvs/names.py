"""The extras and dependency groups a run asks for, checked by name against the project's
pyproject.toml."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testfleet.errors import ConfigError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def normalize(name: str) -> str:
    """An extra's or group's name as packaging compares it (PEP 503): `Foo_Bar` is `foo-bar`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_pyproject(root: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}  # the config loader already refused a broken one; uv will say the rest


def check_names(root: Path, extras: Sequence[str], groups: Sequence[str]) -> None:
    """Refuse extras and dependency groups the project does not define, before uv runs (uv
    only warns about an unknown extra, and would build an environment without it)."""
    document = _read_pyproject(root)
    project = document.get("project")
    if (
        extras
        and isinstance(project, dict)
        and "optional-dependencies" not in project.get("dynamic", [])
    ):
        defined = project.get("optional-dependencies") or {}
        _check_defined("extras", "extra", extras, defined, "[project.optional-dependencies]")
    if groups:
        defined_groups = dict(document.get("dependency-groups") or {})
        uv_table = document.get("tool", {}).get("uv", {})
        if isinstance(uv_table, dict) and uv_table.get("dev-dependencies") is not None:
            defined_groups.setdefault("dev", [])  # uv's older spelling of the `dev` group
        _check_defined(
            "dependency-groups", "dependency group", groups, defined_groups, "[dependency-groups]"
        )


def _check_defined(
    key: str, what: str, names: Sequence[str], defined: Mapping[str, Any], table: str
) -> None:
    known = {normalize(name): name for name in defined}
    for name in names:
        if normalize(name) not in known:
            listed = ", ".join(sorted(defined)) or "none"
            raise ConfigError(
                f"{key}: the project defines no {what} {name!r}"
                f"{did_you_mean(name, defined)} (its {key}: {listed});"
                f" fix the name in {key}, or add it to {table} in pyproject.toml"
            )
