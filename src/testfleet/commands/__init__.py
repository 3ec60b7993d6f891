"""The commands, one module each (`run`, `up`, `plan`, `merge`, `ci`, `doctor`, `prune`, `images`),
a short pipeline of named steps. cli.py imports a command's module only when it runs; each
module has `add_arguments(parser)` and `main(call) -> int`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from testfleet.lanes.early import EarlyLane


@dataclass(frozen=True)
class Call:
    """One invocation of a command, as the command line gave it."""

    args: argparse.Namespace
    argv: Sequence[str] = ()  # everything after `testfleet`, for starting it again
    pytest_args: Sequence[str] = ()  # what came after `--`
    # Lane 1's interpreter, started before testfleet was imported (for `run`).
    early: EarlyLane | None = None
    started: float = 0.0  # time.monotonic() when the command started
