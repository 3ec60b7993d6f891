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


@dataclass(frozen=True)
class Option:
    key: str  # the [tool.testfleet] key
    help: str
    parse: Callable[[str], Any] = str
    metavar: str = "VALUE"

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
    Option("timeout", "stop the whole run after this many seconds", _seconds, "SECONDS"),
    Option("junit-xml", "where to write the JUnit XML report", metavar="PATH"),
    Option("dotenv", "where `up` writes the stack's env as a dotenv file", metavar="PATH"),
    Option("run-dir", "where run data lives (default: /dev/shm when present)", metavar="DIR"),
    Option("python", "the interpreter that runs pytest (default: this one)", metavar="PATH"),
    Option("pytest-args", "arguments always passed to pytest", shlex.split, "ARGS"),
)
