"""argv -> a command. A parser and a table of commands: each command lives in its own module
under `commands/`, imported only when that command runs. A user error is one line and exit
code 2; Ctrl-C is 130; SIGTERM and SIGHUP are 128 + the signal."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, Protocol

from testfleet import __version__
from testfleet.commands import Call
from testfleet.console import error, say
from testfleet.errors import ConfigError, ExitCode, Interrupted, TestfleetError
from testfleet.interrupts import HeldSignals
from testfleet.lanes.early import EarlyLane, subcommand
from testfleet.options import OPTIONS
from testfleet.runtime import signals_as_exceptions

# The commands, in the order `testfleet --help` lists them: name -> what it does.
COMMANDS: dict[str, str] = {
    "run": "start the stack (or use a running up's), run the suite in lanes, write the reports",
    "up": "start the stack and keep it running for runs and your shell, until Ctrl-C",
    "plan": "show how the suite would be split into lanes, without running it",
    "merge": "join the shard directories of a CI run into one set of reports",
    "ci": "write CI files that run the suite over Python versions x shards and merge them",
    "doctor": "show which backends, binaries, uv and Pythons this machine has",
    "prune": "remove this project's containers kept by reuse = true (--all: every project's)"
    " that no run uses, and gone runs' files",
    "images": "build local Docker images of the services for engines no registry reaches",
}


class Command(Protocol):
    """What a module under `commands/` provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def main(self, call: Call) -> int: ...


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line and exit 2 like every other usage error."""

    def error(self, message: str) -> Any:
        raise ConfigError(f"{message} (see {self.prog} --help)")


def command_module(name: str) -> Command:
    module: Command = importlib.import_module(f"testfleet.commands.{name}")
    return module


def build_parser(command: str | None = None) -> Parser:
    """The parser; `command`'s own arguments are added (its module is imported to add them),
    every other command is listed with its help only."""
    parser = Parser(prog="testfleet", description="Run a pytest suite fast against real services.")
    parser.add_argument("--version", action="version", version=f"testfleet {__version__}")
    parser.add_argument(
        "-C",
        "--project",
        metavar="DIR",
        default=".",
        help="the project directory (where pyproject.toml is; default: here)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, help_text in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == command:
            command_module(name).add_arguments(sub)
    return parser


def not_taken(command: str, words: Sequence[str]) -> str:
    """What to say of arguments `command` does not take, naming the commands that do."""
    said = f"`testfleet {command}` does not take {' '.join(words)}"
    for word in words:
        flag = word.split("=", 1)[0]
        takers = [o.commands for o in OPTIONS if flag in (o.flag, o.short)]
        if takers:
            said += f"; {flag} is for {', '.join(takers[0])}"
    return f"{said} (see testfleet {command} --help)"


def main(
    argv: Sequence[str] | None = None,
    *,
    early: EarlyLane | None = None,
    started: float | None = None,
) -> int:
    """`early`: lane 1's interpreter, started before testfleet was imported; `started`: when
    the command started (time.monotonic())."""
    started = time.monotonic() if started is None else started
    words = list(sys.argv[1:] if argv is None else argv)
    options, pytest_args = words, []
    if "--" in words:
        cut = words.index("--")
        options, pytest_args = words[:cut], words[cut + 1 :]
    try:
        with signals_as_exceptions():
            name = subcommand(options)
            # The command's module and its imports (pydantic) would turn a Ctrl-C into a
            # traceback or an internal error: it is raised once they are imported.
            with HeldSignals():
                parser = build_parser(name if name in COMMANDS else None)
            args, unknown = parser.parse_known_args(options)
            if unknown:
                raise ConfigError(not_taken(args.command, unknown))
            if pytest_args and args.command != "run":
                raise ConfigError(
                    f"arguments after -- go to pytest, which only 'run' starts: {pytest_args}"
                )
            if not os.path.isdir(args.project):
                raise ConfigError(f"-C {args.project}: no such directory")
            call = Call(args, tuple(words), tuple(pytest_args), early, started)
            with HeldSignals():
                command = command_module(args.command)
            return command.main(call)
    except TestfleetError as exc:
        error(exc.message, exc.details)
        return exc.exit_code
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return ExitCode.INTERRUPTED
    except Interrupted as exc:
        say(f"stopped by {signal.Signals(exc.signum).name}; everything started was stopped")
        return 128 + exc.signum
    except Exception as exc:  # a bug of ours: say so plainly, with the trace on request
        from testfleet import space

        if space.disk_full(exc):  # not a bug: a filesystem filled up, which the user can fix
            error(space.FULL_SOMEWHERE, f"{type(exc).__name__}: {exc}")
            return ExitCode.SERVICE
        error(
            f"internal error: {type(exc).__name__}: {exc} (set TESTFLEET_DEBUG=1 for the traceback)"
        )
        if os.environ.get("TESTFLEET_DEBUG"):
            traceback.print_exc()
        return ExitCode.SERVICE
