"""A small YAML emitter for the CI files: plain data (dicts, lists, strings, numbers, bools,
None) in, block-style YAML text out.

testfleet does not depend on a YAML library, and the files it writes need only a small,
predictable subset. Safety comes from the quoting rule: a string is written bare only when it
is a short word that every YAML parser (1.1 and 1.2) reads back as the same string; everything
else is a double-quoted scalar with YAML's escapes (a JSON string is one), or, for a multi-line
shell script, a literal block (`|`) when its text is representable exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

WIDTH = 100
# A bare word: starts with a letter, so never a number, date, indicator or alias; no ": ",
# " #", flow punctuation or quote can appear in it.
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_./@+-]*")
# YAML 1.1 reads these as booleans or null (GitHub's parser is 1.2, others are not).
_RESERVED = frozenset(("y", "n", "yes", "no", "on", "off", "true", "false", "null"))
# Short escapes YAML's double-quoted style shares with JSON (and a few of its own).
_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\0": "\\0",
    "\x07": "\\a",
    "\x08": "\\b",
    "\x0b": "\\v",
    "\x0c": "\\f",
    "\x1b": "\\e",
}


def _printable(char: str) -> bool:
    """YAML's printable set, less the characters some parsers treat as line breaks or a BOM."""
    code = ord(char)
    if 0x20 <= code <= 0x7E:
        return True
    if 0xA0 <= code <= 0xD7FF:
        return True
    if 0xE000 <= code <= 0xFFFD:
        return code not in (0xFEFF,)
    return 0x10000 <= code <= 0x10FFFF


def _check_text(text: str) -> None:
    # A lone surrogate (from undecodable bytes in argv) cannot be written as UTF-8 at all.
    if any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        raise ValueError(f"not valid Unicode text: {text!r}")


def quoted(text: str) -> str:
    """`text` as a quoted YAML scalar: single-quoted when that needs no escapes and reads
    better (`'["3.12"]'`), else double-quoted with every non-printable character escaped."""
    _check_text(text)
    if ('"' in text or "\\" in text) and all(_printable(char) for char in text):
        # In single quotes nothing is an escape; only the quote itself is doubled.
        return "'" + text.replace("'", "''") + "'"
    out = ['"']
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif _printable(char):
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def is_plain(text: str) -> bool:
    return bool(_PLAIN.fullmatch(text)) and text.lower() not in _RESERVED


def scalar(value: object) -> str:
    """One scalar on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no YAML for the number {value!r}")
        return repr(value)
    if isinstance(value, str):
        return value if is_plain(value) else quoted(value)
    raise TypeError(f"no YAML for {type(value).__name__}: {value!r}")


def _literal_lines(text: str) -> tuple[str, list[str]] | None:
    """A literal block's indicator and lines when `text` reads back exactly from one, else None.

    Excluded: text that starts with a space or a line break (it would need an indentation
    indicator), more than one trailing line break, lines ending in spaces (editors strip them),
    and anything that is not printable.
    """
    if "\n" not in text or text[0] in " \n":
        return None
    body = text[:-1] if text.endswith("\n") else text
    if body.endswith("\n"):
        return None
    lines = body.split("\n")
    for line in lines:
        if line != line.rstrip() or not all(_printable(char) for char in line):
            return None
    _check_text(text)
    return ("|" if text.endswith("\n") else "|-"), lines


@dataclass(frozen=True)
class Commented:
    """A string written with a comment after it on its line: `uses: owner/action@<sha>  # v1.2.3`
    (readers see only the string)."""

    value: str
    comment: str

    def __post_init__(self) -> None:
        if not _printable_line(self.comment) or not self.comment.strip():
            raise ValueError(f"a comment must be one printable line: {self.comment!r}")


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _flow_list(items: Sequence[Any]) -> str | None:
    """`[a, "b", 3]` for a list of numbers, switches and strings without spaces (names,
    versions, paths), else None: commands and sentences read better one per line."""
    for item in items:
        if isinstance(item, str) and (" " in item or not item or not _printable_line(item)):
            return None
        if not _is_scalar(item):
            return None
    return "[" + ", ".join(scalar(item) for item in items) + "]"


def _printable_line(text: str) -> bool:
    return all(_printable(char) for char in text)


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, not {key!r}")
    return scalar(key)


def _value_lines(prefix: str, value: Any, indent: int) -> list[str]:
    """`prefix` ("key:" or "-") followed by `value`: on the same line when it is a scalar or a
    short flow list, else as an indented block below (a block scalar, mapping or list)."""
    pad = " " * indent
    if isinstance(value, Commented):
        return [f"{pad}{prefix} {scalar(value.value)}  # {value.comment}"]
    if isinstance(value, str):
        literal = _literal_lines(value)
        if literal is not None:
            indicator, lines = literal
            inner = " " * (indent + 2)
            return [f"{pad}{prefix} {indicator}", *(inner + line if line else "" for line in lines)]
    if _is_scalar(value):
        return [f"{pad}{prefix} {scalar(value)}"]
    if isinstance(value, Mapping):
        if not value:
            return [f"{pad}{prefix} {{}}"]
        lines = _mapping_lines(value, indent + 2)
        if prefix == "-":
            # A mapping in a list starts on the dash's line; its other keys align with the first.
            return [f"{pad}- {lines[0][indent + 2 :]}", *lines[1:]]
        return [f"{pad}{prefix}", *lines]
    if isinstance(value, Sequence):
        flow = _flow_list(value)
        if flow is not None and len(pad) + len(prefix) + 1 + len(flow) <= WIDTH:
            return [f"{pad}{prefix} {flow}"]
        if prefix == "-":
            raise TypeError("a list directly inside a list is not supported")
        lines = [f"{pad}{prefix}"]
        for item in value:
            lines.extend(_value_lines("-", item, indent + 2))
        return lines
    raise TypeError(f"no YAML for {type(value).__name__}: {value!r}")


def _mapping_lines(
    mapping: Mapping[str, Any],
    indent: int,
    spaced: bool = False,
    spaced_keys: Set[str] = frozenset(),
) -> list[str]:
    """A block mapping; `spaced` puts a blank line between its entries, and the entries whose
    keys are in `spaced_keys` get that too for their own entries (the jobs of a workflow).
    Blank lines carry no meaning; they keep a generated file readable."""
    lines: list[str] = []
    for position, (key, value) in enumerate(mapping.items()):
        if position and spaced:
            lines.append("")
        if key in spaced_keys and isinstance(value, Mapping) and value:
            lines.append(f"{' ' * indent}{_key(key)}:")
            lines.extend(_mapping_lines(value, indent + 2, spaced=True))
        else:
            lines.extend(_value_lines(f"{_key(key)}:", value, indent))
    return lines


def dump(
    document: Mapping[str, Any], comments: Sequence[str] = (), spaced_keys: Set[str] = frozenset()
) -> str:
    """The YAML text of `document`, after `comments` (each one line) as `#` lines; a blank
    line between top-level entries, and between the entries under `spaced_keys`."""
    lines: list[str] = []
    for comment in comments:
        if "\n" in comment or "\r" in comment:
            raise ValueError(f"a comment must be one line: {comment!r}")
        _check_text(comment)
        lines.append(f"# {comment}".rstrip())
    if comments:
        lines.append("")
    lines.extend(_mapping_lines(document, 0, spaced=True, spaced_keys=spaced_keys))
    return "\n".join(lines) + "\n"
