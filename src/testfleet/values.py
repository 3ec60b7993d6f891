"""How a value is read, whether it comes from a flag, an env var or pyproject.toml: one
parser per value, each raising ValueError with a message that says what is accepted, so that
every source shares one rule and one wording."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from testfleet.errors import did_you_mean

MAX_LANES = 64
MAX_SHARDS = 256
MAX_RERUNS = 10
RECHECK_MODES = ("auto", "on", "off")
VERSION_SPEC = re.compile(r"^3\.\d+(\.\d+)?$")


def argument_type(parse: Callable[[Any], Any]) -> Callable[[str], Any]:
    """A parse function as an argparse `type`: argparse shows a type's own message only for
    ArgumentTypeError; for a ValueError it says "invalid _lanes value", naming our function
    instead of what is accepted."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (got {text!r})") from None

    return convert


def _number(value: object, what: str) -> float:
    # bool is an int to Python; `timeout = true` is a mistake, not one second.
    if isinstance(value, bool):
        raise ValueError(what)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(what) from None
    raise ValueError(what)


def seconds(value: object) -> float:
    what = "must be a positive number of seconds"
    number = _number(value, what)
    if not 0 < number < float("inf"):
        raise ValueError(what)
    return number


def percent(value: object) -> float:
    what = "must be a percentage from 0 to 100"
    number = _number(value, what)
    if not 0 <= number <= 100:
        raise ValueError(what)
    return number


def whole(value: object, low: int, high: int, what: str) -> int:
    """A whole number from `low` to `high`, written as a number or as text."""
    if isinstance(value, bool):
        raise ValueError(what)
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValueError(what) from None
    if not isinstance(value, int) or not low <= value <= high:
        raise ValueError(what)
    return value


def lanes(value: object) -> int | str:
    if value == "auto":
        return "auto"
    what = f'must be a whole number of lanes from 1 to {MAX_LANES}, or "auto"'
    return whole(value, 1, MAX_LANES, what)


def reruns(value: object) -> int:
    return whole(value, 0, MAX_RERUNS, f"must be a whole number of reruns from 0 to {MAX_RERUNS}")


def recheck(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in RECHECK_MODES:
        raise ValueError("must be on, off or auto (on in CI when at most 5 tests failed)")
    return str(value)


def one_of(choices: Sequence[str]) -> Callable[[Any], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    return parse


def switch(value: object) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower() if isinstance(value, str) else None
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def path(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a path (a non-empty string)")
    return value


def is_version(spec: str) -> bool:
    """'3.12' asks for an environment made with uv; anything else names an interpreter."""
    return bool(VERSION_SPEC.match(spec))


def pythons(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
    elif isinstance(value, list | tuple) and all(isinstance(p, str) for p in value):
        parts = [p.strip() for p in value]
    else:
        raise ValueError('must be a version ("3.12"), a list of them, or an interpreter path')
    if not parts or not all(parts):
        raise ValueError('must be a version ("3.12"), a list of them, or an interpreter path')
    if len(parts) != len(set(parts)):
        raise ValueError("names a Python twice")
    if len(parts) > 1 and not all(is_version(p) for p in parts):
        raise ValueError('a matrix lists versions ("3.11", "3.12"); a path names one interpreter')
    return tuple(parts)


def names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple) and all(
        isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v) for v in value
    ):
        return tuple(value)
    raise ValueError('must be a list of names, such as ["test"]')


def kinds(
    known: Sequence[str], aliases: Mapping[str, str], refused: Mapping[str, str]
) -> Callable[[Any], tuple[str, ...]]:
    """Service kinds as users type them (`postgres,valkey`, `PostgreSQL`): any case, an alias
    for a kind's other name, each kind once, empty parts skipped so that a CI file can join
    its toggles with commas and pass "" for none. `refused`: kinds that cannot be named here,
    with why."""

    def parse(value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            words = value.split(",")
        elif isinstance(value, list | tuple) and all(isinstance(word, str) for word in value):
            words = list(value)
        else:
            raise ValueError(f"must be service kinds separated by commas, such as {known[0]}")
        found: list[str] = []
        for word in (word.strip().lower() for word in words):
            if not word:
                continue
            if word in refused:
                raise ValueError(refused[word])
            kind = aliases.get(word, word)
            if kind not in known:
                hint = did_you_mean(word, [*known, *aliases])
                raise ValueError(
                    f"'{word}' is not a service kind (kinds: {', '.join(known)}){hint}"
                )
            if kind not in found:
                found.append(kind)
        return tuple(found)

    return parse


def shard(value: object) -> str:
    match = re.fullmatch(r"(\d+)/(\d+)", value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)) <= MAX_SHARDS:
        raise ValueError(f"must be I/M with 1 <= I <= M <= {MAX_SHARDS}, such as 2/4")
    return str(value)


def arguments(value: object) -> list[str]:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:  # "No closing quotation"
            raise ValueError(f"must be shell-quoted arguments ({exc})") from None
    if isinstance(value, list | tuple) and all(isinstance(arg, str) for arg in value):
        return list(value)
    raise ValueError('must be a list of strings, such as ["-q", "-x"]')
