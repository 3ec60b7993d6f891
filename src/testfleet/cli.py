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
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from testfleet import __version__, durations
from testfleet.config import Project, load_project
from testfleet.console import error, say
from testfleet.coordinator import Coordinator, Progress
from testfleet.doctor import doctor
from testfleet.errors import (
    EXIT_INTERRUPTED,
    EXIT_NO_TESTS,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_TESTS_FAILED,
    ConfigError,
    Interrupted,
    ServiceError,
    TestfleetError,
)
from testfleet.files import write_private
from testfleet.lanes import collect, launch, python_version, resolve_lanes
from testfleet.options import OPTIONS
from testfleet.plan import ideal_bound, plan
from testfleet.progress import LiveProgress, NullProgress, PlainProgress
from testfleet.reports import coverage as coverage_report
from testfleet.reports.junit import write_junit
from testfleet.reports.summary import RunFacts, print_summary
from testfleet.results import TestResult
from testfleet.runtime import Run, signals_as_exceptions
from testfleet.stack import LaneEnv, Stack, in_parallel, resolve_binaries

WATCH_INTERVAL_SECONDS = 0.25


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every usage error
        raise ConfigError(f"{message} (see {self.prog} --help)")


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
    plan = commands.add_parser("plan", help="show how the suite would be split, without running")
    for sub in (up, run, plan):
        for option in OPTIONS:
            names = [option.short, option.flag] if option.short else [option.flag]
            help_text = f"{option.help} [env: {option.env}]"
            if option.switch:
                sub.add_argument(
                    *names, dest=option.dest, action="store_const", const=True, help=help_text
                )
            else:
                sub.add_argument(
                    *names,
                    dest=option.dest,
                    metavar=option.metavar,
                    type=option.parse,
                    help=help_text,
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
    if args.command == "plan":
        return plan_command(project)
    return run(project)


def _start(project: Project, run: Run, stack: Stack, lanes: int) -> list[LaneEnv]:
    """Start the stack and provision every lane (in parallel); say how long it took."""
    began = time.perf_counter()
    stack.start()
    envs = in_parallel([partial(stack.provision, n) for n in range(1, lanes + 1)])
    names = ", ".join(project.config.services) or "no services"
    say(
        f"stack ready in {time.perf_counter() - began:.2f} s ({names}, {lanes} lane(s));"
        f" run {run.run_dir.run_id}"
    )
    return envs


def up(project: Project) -> int:
    binaries = resolve_binaries(project)
    dotenv = project.path(project.config.dotenv)
    with Run(_base(project)) as run:
        stack = Stack(project, run, binaries)
        try:
            (lane,) = _start(project, run, stack, 1)
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
    lanes = resolve_lanes(config)
    durations_path = project.path(config.durations)
    measured = durations.load(durations_path, project.root)
    deadline = time.monotonic() + config.timeout if config.timeout else None
    console = Console(stderr=True, soft_wrap=True)
    interactive = sys.stderr.isatty()
    with Run(_base(project)) as run_:
        stack = Stack(project, run_, binaries, lanes=lanes)
        try:
            envs = _start(project, run_, stack, lanes)
            coverage_dir = run_.run_dir.path / "coverage" if config.coverage else None
            socket_path = run_.run_dir.path / "queue.sock"
            launch_spec = launch(
                project,
                stack,
                {e.lane: e for e in envs},
                run_.run_dir.path,
                socket_path=socket_path,
                coverage_dir=coverage_dir,
                interactive=interactive,
            )
            progress: Progress = (
                NullProgress()
                if launch_spec.log_path(1) is None
                else LiveProgress(console)
                if console.is_terminal
                else PlainProgress()
            )
            coordinator = Coordinator(
                launch_spec,
                lanes,
                socket_path,
                measured=measured,
                group_by=config.group_by,
                test_timeout=config.test_timeout,
                deadline=deadline,
                progress=progress,
            )
            lanes_began = time.perf_counter()
            interruption: BaseException | None = None
            try:
                coordinator.run()
            except (KeyboardInterrupt, Interrupted) as exc:
                interruption = exc
            wall = time.perf_counter() - lanes_began
            results = coordinator.final_results()
            _write_reports(project, coordinator, results, durations_path)
            cov = coverage_report.combine(project, coverage_dir) if coverage_dir else None
        finally:
            stack.stop()
    junit = project.path(config.junit_xml)
    print_summary(
        console,
        results,
        RunFacts(
            wall=wall,
            lanes=list(coordinator.lanes.values()),
            unknown_durations=coordinator.unknown_durations,
            per_unknown=coordinator.per_unknown,
            coverage=cov,
        ),
    )
    say(
        f"JUnit XML: {junit}"
        + (f"; coverage XML: {cov.xml}" if cov and cov.total is not None else "")
    )
    if interruption is not None:
        raise interruption
    return _exit_code(project, coordinator, results, cov)


def _write_reports(
    project: Project, coordinator: Coordinator, results: list[TestResult], durations_path: Path
) -> None:
    errors = [
        TestResult(nodeid, "error", message="collection error", text=text)
        for nodeid, text in coordinator.collect_errors.items()
    ]
    write_junit(
        project.path(project.config.junit_xml),
        errors + results,
        python=python_version(project.python),
    )
    measured = {r.nodeid: r.duration for r in results if r.timed}
    if measured:
        durations.merge(durations_path, measured)


def _exit_code(
    project: Project,
    coordinator: Coordinator,
    results: list[TestResult],
    cov: coverage_report.CoverageOutcome | None,
) -> int:
    if coordinator.fatal:
        raise TestfleetError(
            coordinator.fatal, details=coordinator.fatal_details, exit_code=coordinator.fatal_code
        )
    if coordinator.timed_out:
        error(
            f"the run timed out after {project.config.timeout:g} s and was stopped;"
            " raise timeout (--timeout) or find the slow test (--test-timeout)"
        )
        return EXIT_TESTS_FAILED
    if coordinator.collect_errors:
        for nodeid, text in coordinator.collect_errors.items():
            error(f"collecting {nodeid} failed", "\n".join(text.splitlines()[-15:]))
        return EXIT_TESTS_FAILED
    if not results:
        error("pytest collected no tests")
        return EXIT_NO_TESTS
    if any(r.failing for r in results):
        return EXIT_TESTS_FAILED
    if cov is not None and cov.total is None and cov.fail_under is not None:
        error("no coverage data was recorded, so coverage-fail-under cannot pass")
        return EXIT_TESTS_FAILED
    if cov is not None and cov.below:
        error(f"total coverage {cov.total:.2f}% is under coverage-fail-under {cov.fail_under:g}%")
        return EXIT_TESTS_FAILED
    return EXIT_OK


def plan_command(project: Project) -> int:
    config = project.config
    lanes = resolve_lanes(config)
    nodeids = collect(project)
    measured = durations.load(project.path(config.durations), project.root)
    result = plan(nodeids, measured, lanes, config.group_by)
    est = result.estimates
    print(
        f"{len(nodeids)} tests in {sum(len(lane.units) for lane in result.lanes)} units"
        f" (group-by {config.group_by}) on {lanes} lane(s);"
        f" {est.unknown} without a measured duration, estimated at {est.per_unknown:.2f} s"
    )
    for lane in result.lanes:
        print(f"lane {lane.lane}: {lane.estimate:.2f} s estimated, {len(lane.units)} unit(s)")
        for unit in lane.units:
            print(f"    {unit.estimate:8.2f} s  {unit.key} ({len(unit.nodeids)} tests)")
    ideal = ideal_bound(list(est.durations.values()), lanes)
    print(
        f"estimated wall {result.makespan:.2f} s; ideal bound {ideal:.2f} s"
        f" (= max(total / {lanes}, longest test))"
    )
    return EXIT_OK


def _base(project: Project) -> Path | None:
    return project.path(project.config.run_dir) if project.config.run_dir else None


def write_dotenv(path: Path, env: Mapping[str, str]) -> None:
    """Owner-only: it holds the run's passwords."""
    write_private(path, "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items()))
