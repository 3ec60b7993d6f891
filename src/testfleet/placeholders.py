"""`{postgres.url}`-style placeholders in config values; `{{` and `}}` are literal braces.

In a shell-string command (`command = "..."`, `ready.command`, a string `setup`) every value
is quoted for the shell where it lands, so a project path such as `/tmp/a b;touch x;` stays one
argument instead of running `touch`. The quoting follows the template's own quotes: bare
`{project_dir}` is single-quoted, inside '...' or "..." the value is escaped for those quotes,
so templates written either way keep working and stay safe.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping

from testfleet.errors import ConfigError

_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_TOKEN = re.compile(r"\{\{|\}\}|\{(" + _NAME + r")\}")
_DOUBLE_QUOTED_SPECIAL = re.compile(r'([\\"$`])')
# Characters after which a `#` starts a comment in sh.
_WORD_BREAKS = frozenset(" \t\n;&|()<>`")


def references(template: str) -> list[str]:
    """The placeholder names a template uses, in order."""
    return [m.group(1) for m in _TOKEN.finditer(template) if m.group(1)]


def check_syntax(template: str, *, where: str, shell: bool = False) -> None:
    """Refuse braces that are neither a placeholder nor `{{`/`}}`, and (`shell`) placeholders
    where no quoting can make their value safe; the ConfigError names `where`."""
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
        _fill(template, lambda name: "", where=where, shell=True)


def expand(
    template: str, values: Mapping[str, str], *, where: str = "value", shell: bool = False
) -> str:
    """Fill every placeholder from `values`; a missing one is a ConfigError naming `where`.

    `shell`: the result is a command for `/bin/sh -c`; each value is quoted for its place in
    it. Argv lists must not use this: their values are single arguments already."""

    def lookup(name: str) -> str:
        if name not in values:
            raise ConfigError(f"{where}: placeholder {{{name}}} has no value here")
        return values[name]

    return _fill(template, lookup, where=where, shell=shell)


def _fill(template: str, lookup: Callable[[str], str], *, where: str, shell: bool) -> str:
    context = _ShellContext(where) if shell else None
    parts: list[str] = []
    position = 0
    for match in _TOKEN.finditer(template):
        literal = template[position : match.start()]
        token = match.group(0)
        name = match.group(1)
        if not name:
            literal += token[0]
        parts.append(literal)
        if context is not None:
            context.feed(literal)
        if name:
            value = lookup(name)
            parts.append(context.quote(name, value) if context is not None else value)
        position = match.end()
    parts.append(template[position:])
    return "".join(parts)


class _ShellContext:
    """Follows sh's quoting through the literal text of a template, so that a value placed
    next can be quoted for exactly where it lands: bare, in '...', in "...", inside `$(...)`,
    or in a comment."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.stack = ["plain"]  # plain | paren | single | double | backtick | comment
        self.escaped = False  # the last character was an unconsumed backslash
        self.dollar = False  # the last character was an unquoted or double-quoted `$`
        self.word_start = True

    def feed(self, text: str) -> None:
        for char in text:
            self._step(char)

    def _step(self, char: str) -> None:
        top = self.stack[-1]
        dollar, self.dollar = self.dollar, False
        if self.escaped:
            self.escaped = False
            self.word_start = False
            return
        if top == "comment":
            if char == "\n":
                self.stack.pop()
                self.word_start = True
            return
        if top == "single":
            if char == "'":
                self.stack.pop()
            return
        if char == "\\":
            self.escaped = True
            return
        if top == "double":
            if char == '"':
                self.stack.pop()
            elif char == "$":
                self.dollar = not dollar
            elif char == "(" and dollar:
                self.stack.append("paren")
                self.word_start = True
            elif char == "`":
                self.stack.append("backtick")
            return
        # Unquoted text: top level, inside $(...) or inside backticks.
        if char == "#" and self.word_start:
            self.stack.append("comment")
            return
        if char == "'":
            self.stack.append("single")
        elif char == '"':
            self.stack.append("double")
        elif char == "`":
            if top == "backtick":
                self.stack.pop()
            else:
                self.stack.append("backtick")
        elif char == "$":
            self.dollar = not dollar  # `$$` is the shell's pid, complete in itself
        elif char == "(":
            self.stack.append("paren")  # $( or a subshell: both end at the matching )
        elif char == ")" and top == "paren":
            self.stack.pop()
        self.word_start = char in _WORD_BREAKS

    def quote(self, name: str, value: str) -> str:
        top = self.stack[-1]
        if self.escaped and top != "comment":
            raise ConfigError(
                f"{self.where}: a backslash right before {{{name}}} would escape the first"
                " character of its value; remove it (testfleet quotes placeholder values)"
            )
        if self.dollar:
            raise ConfigError(
                f"{self.where}: '$' right before {{{name}}} makes the shell expand the value;"
                " remove the '$' (testfleet fills the placeholder itself), or write \\$"
            )
        if "backtick" in self.stack and top != "comment":
            raise ConfigError(
                f"{self.where}: {{{name}}} is inside backticks, where its value cannot be"
                " quoted safely; use $(...) instead"
            )
        self.word_start = False
        if top == "single":
            # Close the quotes, add an escaped quote, reopen: '\'' is sh for a literal '.
            return value.replace("'", "'\\''")
        if top == "double":
            return _DOUBLE_QUOTED_SPECIAL.sub(r"\\\1", value)
        if top == "comment":
            return value.replace("\n", " ")  # a newline would end the comment
        return shlex.quote(value)
