"""Run options, each declared once: the CLI flag, the env var and the config key derive from it.

An option's `parse` takes either the text of a flag or env var, or the value a user wrote in
pyproject.toml, and raises ValueError with a message saying what is accepted; so the three
sources share one rule and one wording.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_LANES = 64
MAX_SHARDS = 256
GROUP_BY = ("module", "class", "test")


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


def _percent(value: object) -> float:
    what = "must be a percentage from 0 to 100"
    percent = _number(value, what)
    if not 0 <= percent <= 100:
        raise ValueError(what)
    return percent


def _whole(value: object, low: int, high: int, what: str) -> int:
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


def _lanes(value: object) -> int | str:
    if value == "auto":
        return "auto"
    what = f'must be a whole number of lanes from 1 to {MAX_LANES}, or "auto"'
    return _whole(value, 1, MAX_LANES, what)


def _group_by(value: object) -> str:
    if value not in GROUP_BY:
        raise ValueError(f"must be one of {', '.join(GROUP_BY)}")
    return str(value)


ORDERS = ("auto", "duration", "pytest")
BACKENDS = ("native", "docker", "external")
NETWORKS = ("shared", "namespace")


RECHECK_MODES = ("auto", "on", "off")
MAX_RERUNS = 10


def _recheck(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in RECHECK_MODES:
        raise ValueError("must be on, off or auto (on in CI when at most 5 tests failed)")
    return str(value)


def _reruns(value: object) -> int:
    return _whole(value, 0, MAX_RERUNS, f"must be a whole number of reruns from 0 to {MAX_RERUNS}")


def _network(value: object) -> str:
    if value not in NETWORKS:
        raise ValueError(f"must be one of {', '.join(NETWORKS)}")
    return str(value)


def _backend(value: object) -> str:
    if value not in BACKENDS:
        raise ValueError(f"must be one of {', '.join(BACKENDS)}")
    return str(value)


def _order(value: object) -> str:
    if value not in ORDERS:
        raise ValueError(f"must be one of {', '.join(ORDERS)}")
    return str(value)


def _switch(value: object) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower() if isinstance(value, str) else None
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _path(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a path (a non-empty string)")
    return value


VERSION_SPEC = re.compile(r"^3\.\d+(\.\d+)?$")


def is_version(spec: str) -> bool:
    """'3.12' asks for an environment made with uv; anything else names an interpreter."""
    return bool(VERSION_SPEC.match(spec))


def _pythons(value: object) -> tuple[str, ...]:
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


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple) and all(
        isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v) for v in value
    ):
        return tuple(value)
    raise ValueError('must be a list of names, such as ["test"]')


def _shard(value: object) -> str:
    match = re.fullmatch(r"(\d+)/(\d+)", value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)) <= MAX_SHARDS:
        raise ValueError(f"must be I/M with 1 <= I <= M <= {MAX_SHARDS}, such as 2/4")
    return str(value)


def _arguments(value: object) -> list[str]:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:  # "No closing quotation"
            raise ValueError(f"must be shell-quoted arguments ({exc})") from None
    if isinstance(value, list | tuple) and all(isinstance(arg, str) for arg in value):
        return list(value)
    raise ValueError('must be a list of strings, such as ["-q", "-x"]')


@dataclass(frozen=True)
class Option:
    key: str  # the [tool.testfleet] key
    help: str
    parse: Callable[[Any], Any] = _path
    metavar: str = "VALUE"
    short: str | None = None
    switch: bool = False  # a flag without a value: --coverage

    @property
    def flag(self) -> str:
        return f"--{self.key}"

    @property
    def flags(self) -> str:
        """How argparse and error messages name it: `-n/--lanes`."""
        return f"{self.short}/{self.flag}" if self.short else self.flag

    @property
    def env(self) -> str:
        return "TESTFLEET_" + self.key.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.key.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option(
        "lanes",
        f"parallel lanes (1 to {MAX_LANES}), each with its own services; 'auto' (see docs)",
        _lanes,
        "N",
        short="-n",
    ),
    Option(
        "test-timeout",
        "fail a test running longer than this, kill and replace its lane",
        seconds,
        "SECONDS",
    ),
    Option("group-by", "what a lane runs together: module, class or test", _group_by, "SCOPE"),
    Option(
        "order",
        "hand out units slowest first (duration) or in file order (pytest); auto: pytest's"
        " order with one lane, duration with more",
        _order,
        "ORDER",
    ),
    Option(
        "backend",
        "where services run unless they say otherwise: native processes, docker containers,"
        " or external servers already running",
        _backend,
        "BACKEND",
    ),
    Option(
        "network",
        "namespace: each lane gets its own network namespace (its own 127.0.0.1), so servers"
        " and a suite's fixed ports meet only their lane's; shared: one network (default)",
        _network,
        "MODE",
    ),
    Option(
        "recheck",
        "run each failed test again alone in a fresh lane and, when it passes there, name the"
        " earlier test that makes it fail: on, off, auto (on in CI for at most 5 failures)",
        _recheck,
        "MODE",
    ),
    Option(
        "rerun-flaky",
        "rerun a failed test alone up to N times; one that then passes counts as passed and"
        " is reported flaky",
        _reruns,
        "N",
    ),
    Option("durations", "the durations file, merged on every run", metavar="PATH"),
    Option("coverage", "measure coverage in every lane and combine it", _switch, switch=True),
    Option(
        "coverage-fail-under",
        "fail the run when total coverage is lower (percent)",
        _percent,
        "PERCENT",
    ),
    Option("coverage-xml", "where to write the combined coverage XML", metavar="PATH"),
    Option("timeout", "stop the whole run after this many seconds", seconds, "SECONDS"),
    Option("junit-xml", "where to write the JUnit XML report", metavar="PATH"),
    Option("dotenv", "where `up` writes the stack's env as a dotenv file", metavar="PATH"),
    Option("run-dir", "where run data lives (default: /dev/shm when present)", metavar="DIR"),
    Option(
        "python",
        "Python versions to run on, each in an environment made with uv (3.11,3.12), or the"
        " interpreter that runs pytest (default: this one)",
        _pythons,
        "VERSIONS|PATH",
    ),
    Option(
        "extras",
        "extras of the project to install in the environments uv makes (test,dev)",
        _names,
        "NAMES",
    ),
    Option(
        "dependency-groups",
        "dependency groups (PEP 735) to install in the environments uv makes",
        _names,
        "NAMES",
    ),
    Option("shard", "run shard I of M (CI machines), written to .testfleet/shards", _shard, "I/M"),
    Option("pytest-args", "arguments always passed to pytest", _arguments, "ARGS"),
    Option(
        "own-stack",
        "start the run's own stack even when a `testfleet up` of the project is running",
        _switch,
        switch=True,
    ),
)

OPTION_BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}
