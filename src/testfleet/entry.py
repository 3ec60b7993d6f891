"""The `testfleet` command. `testfleet run` starts its first lane's interpreter here, before
the rest of testfleet is imported (see lanes/early.py)."""

from __future__ import annotations

import contextlib
import os
import sys
import time

_STARTED = time.monotonic()

from testfleet.lanes import early as early_lanes  # noqa: E402 - after the clock starts


def main() -> int:
    argv = sys.argv[1:]
    early = early_lanes.speculate(argv)
    try:
        from testfleet.cli import main as cli_main

        code = cli_main(argv, early=early, started=_STARTED)
    finally:
        if early is not None:
            early.discard()
    # Everything the command started has stopped and its files are written: the interpreter's
    # own teardown of every module would only add a tenth of a second to each command.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, say
            stream.flush()
    os._exit(code)
