"""The errors testfleet reports to its user: one line each, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    """What testfleet exits with (verdict.py decides it for run and merge)."""

    OK = 0
    TESTS_FAILED = 1  # a test failed, a module did not collect, coverage is too low, a timeout
    USAGE = 2  # a mistake in the config, a flag or the environment: the message names it
    SERVICE = 3  # a service failed, a report could not be written, or an internal error
    NO_TESTS = 5  # pytest collected nothing (as pytest's own 5)
    INTERRUPTED = 130  # Ctrl-C; SIGTERM and SIGHUP are 128 + their number


class TestfleetError(Exception):
    """Base of every error testfleet reports; the message says what to change."""

    __test__ = False  # not a pytest test class, despite the name
    exit_code: int = ExitCode.SERVICE

    def __init__(self, message: str, *, details: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        self.message = message
        # Extra lines (a service's log tail) printed under the one-line message.
        self.details = details


class ConfigError(TestfleetError):
    """Something the user wrote or passed is wrong: a key, a value, a flag, a missing binary."""

    exit_code = ExitCode.USAGE


class ServiceError(TestfleetError):
    """A service failed to start, become ready or provision a lane."""

    exit_code = ExitCode.SERVICE


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived; unwinds like KeyboardInterrupt so teardown runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
