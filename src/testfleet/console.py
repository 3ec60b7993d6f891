"""What testfleet says: progress and errors on stderr, data (env exports) on stdout."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(f"testfleet: {message}", file=sys.stderr, flush=True)


def error(message: str, details: str = "") -> None:
    print(f"testfleet: error: {message}", file=sys.stderr, flush=True)
    for line in details.splitlines():
        print(f"    {line}", file=sys.stderr, flush=True)
