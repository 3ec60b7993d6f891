"""`{postgres.url}`-style placeholders in config values; `{{` and `}}` are literal braces.

Where no shell reads a value (`env`, `export`, argv lists, URLs, pytest-args) a placeholder is
its value. In a shell string (`command = "..."`, `ready.command`, a string `setup`) it is a
reference to an environment variable holding the value, `{project_dir}` ->
`"${TESTFLEET_PROJECT_DIR?}"` (shell_syntax.py says how it is written where it lands), and
the process gets those variables (envvars.placeholder_environ): no value is ever part of the
text a shell parses, so no value can become code, however the command quotes or nests it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from testfleet.errors import ConfigError
from testfleet.shell_syntax import ShellText

_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_TOKEN = re.compile(r"\{\{|\}\}|\{(" + _NAME + r")\}")


def variable(name: str) -> str:
    """The environment variable that holds a placeholder's value for shell strings:
    `project_dir` -> `TESTFLEET_PROJECT_DIR`, `postgres.url` -> `TESTFLEET_POSTGRES_URL`."""
    return "TESTFLEET_" + re.sub(r"[.-]", "_", name).upper()


def references(template: str) -> list[str]:
    """The placeholder names a template uses, in order."""
    return [m.group(1) for m in _TOKEN.finditer(template) if m.group(1)]


def check_syntax(template: str, *, where: str, shell: bool = False) -> None:
    """Refuse braces that are neither a placeholder nor `{{`/`}}`, and (`shell`) placeholders
    where a shell would run their value as code; the ConfigError names `where`."""
    covered = [(m.start(), m.end()) for m in _TOKEN.finditer(template)]
    position = 0
    for start, end in [*covered, (len(template), len(template))]:
        gap = template[position:start]
        for offset, char in enumerate(gap):
            if char == "}":
                raise ConfigError(
                    f"{where}: a lone '}}' in {template!r}; write }}}} for a literal brace"
                )
            if char == "{":
                rest = template[position + offset :]
                close = rest.find("}")
                name = re.match(_NAME, rest[1:])
                if name or close < 0:
                    closed = f" as {{{name.group(0)}}}" if name else ""
                    raise ConfigError(
                        f"{where}: unclosed '{{' in {template!r}; close the placeholder{closed},"
                        " or write {{ for a literal brace"
                    )
                raise ConfigError(
                    f"{where}: {rest[: close + 1]!r} is not a placeholder (a name of letters,"
                    " digits, '_', '.' and '-' in braces); write {{ and }} for literal braces"
                )
        position = end
    if shell:
        _fill(template, lambda name: None, where=where, shell=True)


def expand(
    template: str, values: Mapping[str, str], *, where: str = "value", shell: bool = False
) -> str:
    """Fill every placeholder from `values`; a missing one is a ConfigError naming `where`.

    `shell`: the result is a command for `/bin/sh -c`, with references in place of values;
    run it with `placeholder_environ(values)` in its environment. Argv lists must not use
    this: their values are single arguments already, read by no shell."""

    def lookup(name: str) -> str:
        if name not in values:
            raise ConfigError(f"{where}: placeholder {{{name}}} has no value here")
        return values[name]

    return _fill(template, lookup, where=where, shell=shell)


def _fill(template: str, lookup: Callable[[str], str | None], *, where: str, shell: bool) -> str:
    text = ShellText(where) if shell else None
    parts: list[str] = []
    position = 0
    for match in _TOKEN.finditer(template):
        literal = template[position : match.start()]
        token = match.group(0)
        name = match.group(1)
        if not name:
            literal += token[0]
        parts.append(literal)
        if text is not None:
            text.feed(literal)
        if name:
            value = lookup(name)
            if text is None:
                parts.append(value or "")
            else:
                placed = text.place(name, variable(name), value)
                text.feed(placed)
                parts.append(placed)
        position = match.end()
    rest = template[position:]
    parts.append(rest)
    if text is not None:
        text.feed(rest)
    return "".join(parts)
