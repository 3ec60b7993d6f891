"""argv -> pipeline. User errors become one line and exit code 2; Ctrl-C is 130."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testfleet import __version__
from testfleet.config import Project, load_project
from testfleet.console import error, say
from testfleet.doctor import doctor
from testfleet.errors import (
    EXIT_INTERRUPTED,
    EXIT_SERVICE,
    ConfigError,
    Interrupted,
    ServiceError,
    TestfleetError,
)
from testfleet.files import write_private
from testfleet.lanes import pytest_command, run_lane
from testfleet.options import OPTIONS
from testfleet.runtime import Run, signals_as_exceptions
from testfleet.stack import LaneEnv, Stack, resolve_binaries

WATCH_INTERVAL_SECONDS = 0.25


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every usage error
        raise ConfigError(f"{message} (see testfleet {self.prog.split()[-1]} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="testfleet", description="Run a pytest suite fast against real services.")
    parser.add_argument("--version", action="version", version=f"testfleet {__version__}")
    parser.add_argument(
        "-C",
        "--project",
        metavar="DIR",
        default=".",
        help="the project directory (where pyproject.toml is)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    up = commands.add_parser("up", help="start the stack and keep it running until Ctrl-C")
    run = commands.add_parser(
        "run",
        help="start the stack, run pytest, tear down",
        description="Arguments after -- go to pytest.",
    )
    for sub in (up, run):
        for option in OPTIONS:
            sub.add_argument(
                option.flag,
                dest=option.dest,
                metavar=option.metavar,
                type=option.parse,
                help=f"{option.help} [env: {option.env}]",
            )
    commands.add_parser("doctor", help="show which backends and binaries this machine has")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, extra = args_list[:cut], args_list[cut + 1 :]
    try:
        with signals_as_exceptions():
            args = build_parser().parse_args(args_list)
            return dispatch(args, extra)
    except TestfleetError as exc:
        error(exc.message, exc.details)
        return exc.exit_code
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return EXIT_INTERRUPTED
    except Interrupted as exc:
        say(f"stopped by {signal.Signals(exc.signum).name}; everything started was stopped")
        return 128 + exc.signum
    except Exception as exc:  # a bug of ours: say so plainly, with the trace on request
        error(
            f"internal error: {type(exc).__name__}: {exc} (set TESTFLEET_DEBUG=1 for the traceback)"
        )
        if os.environ.get("TESTFLEET_DEBUG"):
            traceback.print_exc()
        return EXIT_SERVICE


def dispatch(args: argparse.Namespace, extra: list[str]) -> int:
    start = Path(args.project)
    if not start.is_dir():
        raise ConfigError(f"-C {args.project}: no such directory")
    if args.command == "doctor":
        try:
            project: Project | None = load_project(start, environ=os.environ)
        except ConfigError:
            project = None
        return doctor(project)
    if extra and args.command != "run":
        raise ConfigError(f"arguments after -- go to pytest, which only 'run' starts: {extra}")
    cli = {o.key: getattr(args, o.dest) for o in OPTIONS}
    cli["extra_pytest_args"] = extra
    project = load_project(start, cli=cli, environ=os.environ)
    if args.command == "up":
        return up(project)
    return run(project)


def _start(project: Project, run: Run, stack: Stack) -> LaneEnv:
    began = time.perf_counter()
    stack.start()
    lane = stack.provision(1)
    names = ", ".join(project.config.services) or "no services"
    say(f"stack ready in {time.perf_counter() - began:.2f} s ({names}); run {run.run_dir.run_id}")
    return lane


def up(project: Project) -> int:
    binaries = resolve_binaries(project)
    dotenv = project.path(project.config.dotenv)
    with Run(_base(project)) as run:
        stack = Stack(project, run, binaries)
        try:
            lane = _start(project, run, stack)
            for key, value in lane.env.items():
                print(f"export {key}={shlex.quote(value)}")
            sys.stdout.flush()
            write_dotenv(dotenv, lane.env)
            say(f"env written to {dotenv}; Ctrl-C stops the stack")
            while True:
                for process in run.supervisor.dead():
                    raise ServiceError(
                        f"{process.name} exited unexpectedly with code {process.exit_code()};"
                        f" its log: {process.log_path}",
                        details=process.tail(),
                    )
                time.sleep(WATCH_INTERVAL_SECONDS)
        finally:
            stack.stop()
            dotenv.unlink(missing_ok=True)


def run(project: Project) -> int:
    config = project.config
    binaries = resolve_binaries(project)
    deadline = time.monotonic() + config.timeout if config.timeout else None
    began = time.perf_counter()
    with Run(_base(project)) as run_:
        stack = Stack(project, run_, binaries)
        try:
            lane = _start(project, run_, stack)
            argv = pytest_command(project, stack.expand_args(config.pytest_args, lane))
            code = run_lane(project, lane, argv, deadline=deadline)
        finally:
            stack.stop()
    say(
        f"pytest finished with exit code {code} in {time.perf_counter() - began:.2f} s;"
        f" JUnit XML: {project.path(config.junit_xml)}"
    )
    return code


def _base(project: Project) -> Path | None:
    return project.path(project.config.run_dir) if project.config.run_dir else None


def write_dotenv(path: Path, env: Mapping[str, str]) -> None:
    """Owner-only: it holds the run's passwords."""
    write_private(path, "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items()))
