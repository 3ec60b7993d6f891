"""The errors testfleet reports to its user: one line each, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_TESTS_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVICE = 3
EXIT_NO_TESTS = 5
EXIT_INTERRUPTED = 130


class TestfleetError(Exception):
    """Base of every error testfleet reports; the message says what to change."""

    __test__ = False  # not a pytest test class, despite the name
    exit_code = EXIT_SERVICE

    def __init__(self, message: str, *, details: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        self.message = message
        # Extra lines (a service's log tail) printed under the one-line message.
        self.details = details


class ConfigError(TestfleetError):
    """Something the user wrote or passed is wrong: a key, a value, a flag, a missing binary."""

    exit_code = EXIT_USAGE


class ServiceError(TestfleetError):
    """A service failed to start, become ready or provision a lane."""

    exit_code = EXIT_SERVICE


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived; unwinds like KeyboardInterrupt so teardown runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
