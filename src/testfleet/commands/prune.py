"""`testfleet prune`: remove the containers kept by `reuse = true` that no run uses now."""

from __future__ import annotations

import argparse

from testfleet.backends.docker_engine import prune_reused
from testfleet.commands import Call
from testfleet.errors import ExitCode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: it asks the engine testcontainers is set up for."""


def main(call: Call) -> int:
    removed = prune_reused()
    print(f"removed {len(removed)} kept container(s)" + "".join(f"\n  {n}" for n in removed))
    return ExitCode.OK
