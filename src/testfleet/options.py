"""Run options, each declared once: the CLI flag, the env var and the config key derive from it."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _lanes(text: str) -> int | str:
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise ValueError("must be a whole number of lanes, 1 or more, or 'auto'")
    return value


def _switch(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


@dataclass(frozen=True)
class Option:
    key: str  # the [tool.testfleet] key
    help: str
    parse: Callable[[str], Any] = str
    metavar: str = "VALUE"
    short: str | None = None
    switch: bool = False  # a flag without a value: --coverage

    @property
    def flag(self) -> str:
        return f"--{self.key}"

    @property
    def env(self) -> str:
        return "TESTFLEET_" + self.key.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.key.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option(
        "lanes",
        "parallel lanes, each with its own services; 'auto' (see docs)",
        _lanes,
        "N",
        short="-n",
    ),
    Option(
        "test-timeout",
        "fail a test running longer than this, kill and replace its lane",
        _seconds,
        "SECONDS",
    ),
    Option("group-by", "what a lane runs together: module, class or test", metavar="SCOPE"),
    Option("durations", "the durations file, merged on every run", metavar="PATH"),
    Option("coverage", "measure coverage in every lane and combine it", _switch, switch=True),
    Option(
        "coverage-fail-under",
        "fail the run when total coverage is lower (percent)",
        float,
        "PERCENT",
    ),
    Option("coverage-xml", "where to write the combined coverage XML", metavar="PATH"),
    Option("timeout", "stop the whole run after this many seconds", _seconds, "SECONDS"),
    Option("junit-xml", "where to write the JUnit XML report", metavar="PATH"),
    Option("dotenv", "where `up` writes the stack's env as a dotenv file", metavar="PATH"),
    Option("run-dir", "where run data lives (default: /dev/shm when present)", metavar="DIR"),
    Option("python", "the interpreter that runs pytest (default: this one)", metavar="PATH"),
    Option("pytest-args", "arguments always passed to pytest", shlex.split, "ARGS"),
)
