"""argv -> pipeline. User errors become one line and exit code 2; Ctrl-C is 130."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from testfleet import __version__, durations, pytest_cache
from testfleet.backends.native import Supervisor, describe_exit, note_spawned
from testfleet.config import Project, check_lanes, load_project
from testfleet.console import error, say
from testfleet.coordinator import Coordinator, Progress, ServiceProblem
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
from testfleet.files import private_dir, write_private
from testfleet.lanes import collect, launch, python_version, resolve_lanes
from testfleet.options import OPTIONS
from testfleet.plan import ideal_bound, plan
from testfleet.preflight import check_paths
from testfleet.progress import LiveProgress, NullProgress, PlainProgress
from testfleet.reaper import remove_if_ours
from testfleet.reports import coverage as coverage_report
from testfleet.reports.junit import write_junit
from testfleet.reports.results_file import write_results
from testfleet.reports.summary import RunFacts, print_summary
from testfleet.results import TestResult
from testfleet.runtime import Run, signals_as_exceptions
from testfleet.stack import LaneEnv, Stack, in_parallel, resolve_binaries

WATCH_INTERVAL_SECONDS = 0.25


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every usage error
        raise ConfigError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from testfleet.options import Option

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

    def flag_type(option: Option) -> Callable[[str], Any]:
        # argparse shows a type's own message only for ArgumentTypeError; for a ValueError it
        # says "invalid _lanes value", naming our function instead of what is accepted.
        def parse(text: str) -> Any:
            try:
                return option.parse(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{exc} (got {text!r})") from None

        return parse

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
                    type=flag_type(option),
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
    # Everything a user can get wrong is found here, before anything starts.
    check_paths(project, args.command)
    lanes = 1 if args.command == "up" else resolve_lanes(project.config)
    check_lanes(project.config, lanes)
    if args.command == "up":
        return up(project)
    if args.command == "plan":
        return plan_command(project, lanes)
    return run(project, lanes)


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


def dead_service(supervisor: Supervisor) -> ServiceProblem | None:
    """A server that exited although nobody stopped it: named, with its status and log."""
    for process in supervisor.dead():
        code = process.exit_code()
        assert code is not None
        return ServiceProblem(
            f"service {process.name} exited unexpectedly ({describe_exit(code)})",
            process.keep_log(),
            process.tail(),
        )
    return None


def _logs_dir(project: Project) -> Path:
    return project.root / ".testfleet" / "logs"


def up(project: Project) -> int:
    binaries = resolve_binaries(project)
    dotenv = project.path(project.config.dotenv)
    with (
        dotenv_lock(dotenv),
        Run(_base(project), keep_logs=_logs_dir(project), owned_files=(dotenv,)) as run,
    ):
        stack = Stack(project, run, binaries)
        try:
            (lane,) = _start(project, run, stack, 1)
            for key, value in lane.env.items():
                print(f"export {key}={shlex.quote(value)}")
            sys.stdout.flush()
            write_dotenv(dotenv, lane.env)
            say(f"env written to {dotenv}; Ctrl-C stops the stack")
            while True:
                problem = dead_service(run.supervisor)
                if problem is not None:
                    raise ServiceError(problem.message, details=problem.details)
                time.sleep(WATCH_INTERVAL_SECONDS)
        finally:
            stack.stop()
            remove_if_ours(dotenv, run.run_dir.run_id)


@contextlib.contextmanager
def dotenv_lock(dotenv: Path) -> Iterator[None]:
    """One `testfleet up` per env file: a second one would overwrite the first's env, and
    stopping either would delete the file the other still serves."""
    dotenv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = dotenv.with_name(f".{dotenv.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(
                f"another `testfleet up` (pid {holder}) serves {dotenv}; stop it first, or give"
                " this one its own env file with --dotenv PATH"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        if dotenv.exists():
            dotenv.unlink()
            say(f"removed {dotenv}, left by a `testfleet up` that was killed")
        yield
    finally:
        os.close(fd)


def run(project: Project, lanes: int) -> int:
    config = project.config
    began = time.perf_counter()
    binaries = resolve_binaries(project)
    durations_path = project.path(config.durations)
    measured = durations.load(durations_path, project.root)
    deadline = time.monotonic() + config.timeout if config.timeout else None
    console = Console(stderr=True, soft_wrap=True)
    interactive = sys.stderr.isatty()
    keep_order = config.order == "pytest" or (config.order == "auto" and lanes == 1)
    python = python_version(project.python)
    with Run(_base(project), keep_logs=_logs_dir(project)) as run_:
        stack = Stack(project, run_, binaries, lanes=lanes)
        try:
            envs = _start(project, run_, stack, lanes)
            coverage_dir = private_dir(run_.run_dir.path / "coverage") if config.coverage else None
            socket_path = private_dir(run_.run_dir.path / "queue") / "queue.sock"

            def on_spawn(pid: int) -> None:
                run_.run_dir.record(pid)
                note_spawned(pid)

            launch_spec = launch(
                project,
                stack,
                {e.lane: e for e in envs},
                run_.run_dir.path,
                socket_path=socket_path,
                coverage_dir=coverage_dir,
                interactive=interactive,
                mark=run_.run_dir.mark,
                on_spawn=on_spawn,
                coverage_rcfile=_rcfile(project) if coverage_dir else "",
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
                keep_order=keep_order,
                watch=partial(dead_service, run_.supervisor),
            )
            lanes_began = time.perf_counter()
            interruption: BaseException | None = None
            try:
                coordinator.run()
            except (KeyboardInterrupt, Interrupted) as exc:
                interruption = exc
            lanes_wall = time.perf_counter() - lanes_began
            results = coordinator.final_results()
            report_problems = _write_reports(
                project, coordinator, results, durations_path, python=python
            )
            cov = coverage_report.combine(project, coverage_dir) if coverage_dir else None
        finally:
            stack.stop()
    for notice in coordinator.notices:
        say(notice)
    junit = project.path(config.junit_xml)
    print_summary(
        console,
        results,
        RunFacts(
            wall=lanes_wall,
            total=time.perf_counter() - began,
            lanes=list(coordinator.lanes.values()),
            unknown_durations=coordinator.unknown_durations,
            per_unknown=coordinator.per_unknown,
            coverage=cov,
        ),
    )
    if coordinator.nodeids is None and interruption is not None:
        say("stopped before the suite was collected; the previous reports were left as they were")
    elif coordinator.nodeids is not None and not report_problems:
        say(
            f"JUnit XML: {junit}"
            + (f"; coverage XML: {cov.xml}" if cov and cov.total is not None else "")
        )
    for problem in report_problems:
        error(problem)
    if interruption is not None:
        raise interruption
    code = _exit_code(project, coordinator, results, cov)
    if report_problems and code in (EXIT_OK, EXIT_TESTS_FAILED, EXIT_NO_TESTS):
        return EXIT_SERVICE
    return code


def _rcfile(project: Project) -> str:
    found = coverage_report.config_file(project.root)
    return found if isinstance(found, str) else ""


def _write_reports(
    project: Project,
    coordinator: Coordinator,
    results: list[TestResult],
    durations_path: Path,
    *,
    python: str,
) -> list[str]:
    """The results file first (plain JSON, it cannot fail on odd characters), then every
    report from the same results; a report that fails is named, and the others still get
    written. Returns what failed."""
    if coordinator.nodeids is None and not coordinator.collect_errors:
        # Stopped before anything was collected: the last run's reports stay as they are
        # rather than being replaced by empty ones.
        return []
    results_path = project.root / ".testfleet" / "results.json"
    errors = [
        TestResult(nodeid, "error", message="collection error", text=text)
        for nodeid, text in coordinator.collect_errors.items()
    ]
    problems: list[str] = []

    def attempt(what: str, write: Callable[[], object]) -> None:
        try:
            write()
        except Exception as exc:
            problems.append(
                f"writing {what} failed ({type(exc).__name__}: {exc}); every result is in"
                f" {results_path}"
            )

    write_results(results_path, results, python=python, collect_errors=coordinator.collect_errors)
    attempt(
        "the JUnit XML",
        lambda: write_junit(
            project.path(project.config.junit_xml), errors + results, python=python
        ),
    )
    measured = {r.nodeid: r.duration for r in results if r.timed}
    if measured:
        attempt("the durations", lambda: durations.merge(durations_path, measured))
    attempt(
        "pytest's lastfailed cache",
        lambda: pytest_cache.merge_lastfailed(project, results, coordinator.collect_errors),
    )
    return problems


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


def plan_command(project: Project, lanes: int) -> int:
    config = project.config
    nodeids = collect(project)
    measured = durations.load(project.path(config.durations), project.root)
    keep_order = config.order == "pytest" or (config.order == "auto" and lanes == 1)
    result = plan(nodeids, measured, lanes, config.group_by, keep_order=keep_order)
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
