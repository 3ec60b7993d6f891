"""The `testfleet` command. `testfleet run` starts its first lane's interpreter here, before
the rest of testfleet is imported (see lanes/early.py).

Ctrl-C may come at any moment of that: while testfleet imports itself, while lane 1 starts.
So every import happens inside `main`, under one handler: an interrupt there is the same one
line and exit 130 as one later on (cli.main), never a traceback, and lane 1 is stopped
(__main__.py says the same when it comes while this module is being imported)."""

from __future__ import annotations

import os
import sys
import time

_STARTED = time.monotonic()

# errors.ExitCode.INTERRUPTED and console.say's line, before either can be imported.
_INTERRUPTED = 130
_INTERRUPTED_LINE = "testfleet: interrupted; everything started was stopped"


def main() -> int:
    try:
        code = _command(sys.argv[1:])
    except KeyboardInterrupt:
        print(_INTERRUPTED_LINE, file=sys.stderr, flush=True)
        code = _INTERRUPTED
    # Everything the command started has stopped and its files are written: the interpreter's
    # own teardown of every module would only add a tenth of a second to each command.
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, say
            stream.flush()
    os._exit(code)


def _command(argv: list[str]) -> int:
    import signal

    from testfleet.interrupts import HeldSignals

    # From the start, as in cli.main (runtime.signals_as_exceptions): a shell starts a
    # background job with SIGINT ignored, and Python keeps it so; `kill -INT` must stop it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    early = None
    try:
        # Held until lane 1 has a name here to stop it by (a Ctrl-C in the middle of starting
        # it would leave it running), and over the imports, which would mangle it.
        with HeldSignals():
            from testfleet.lanes import early as early_lanes

            early = early_lanes.speculate(argv)
            from testfleet.cli import main as cli_main

        return cli_main(argv, early=early, started=_STARTED)
    finally:
        if early is not None:
            with HeldSignals():  # a second Ctrl-C does not cut the stop short
                early.discard()
