"""`{postgres.url}`-style placeholders in config values; `{{` and `}}` are literal braces."""

from __future__ import annotations

import re
from collections.abc import Mapping

from testfleet.errors import ConfigError

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


def references(template: str) -> list[str]:
    """The placeholder names a template uses, in order."""
    return [m.group(1) for m in _TOKEN.finditer(template) if m.group(1)]


def expand(template: str, values: Mapping[str, str], *, where: str = "value") -> str:
    """Fill every placeholder from `values`; a missing one is a ConfigError naming `where`."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if name not in values:
            raise ConfigError(f"{where}: placeholder {{{name}}} has no value here")
        return values[name]

    return _TOKEN.sub(replace, template)
