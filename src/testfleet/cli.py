"""argv -> pipeline. User errors become one line and exit code 2; Ctrl-C is 130."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import itertools
import os
import re
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testfleet import __version__, durations, early_lanes, pytest_cache
from testfleet.ci import add_ci_parser
from testfleet.config import Project, check_lanes, load_project
from testfleet.console import error, say
from testfleet.coordinator import Coordinator, Progress, RunOutcome
from testfleet.early_lanes import EarlyLane, EarlyLanes
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
from testfleet.lanes import (
    collect,
    early_environ,
    lanes_for_selection,
    launch,
    project_modules,
    recheck_runner,
    resolve_lanes,
)
from testfleet.options import OPTIONS, argument_type, is_version
from testfleet.plan import WorkSource, ideal_bound, plan, work_source
from testfleet.preflight import check_paths
from testfleet.processes import note_spawned
from testfleet.reaper import remove_if_ours
from testfleet.results import TestResult
from testfleet.runtime import Run, signals_as_exceptions, teardown_shield
from testfleet.shared_stack import descriptor_path, not_shareable
from testfleet.stack import LaneEnv, LaneProvider, Stack, in_parallel, resolve_binaries
from testfleet.up_client import Connection, SharedStack, find_up

if TYPE_CHECKING:
    # What `testfleet run` needs only after its lanes start is imported then (see
    # _import_the_rest): the first lane is handed its work sooner.

    from testfleet import recheck
    from testfleet.envs import PythonTarget
    from testfleet.reports import coverage as coverage_report

WATCH_INTERVAL_SECONDS = 0.25
# Imported on a thread while the lanes run: reports, summary and rechecks.
_LATER = (
    "rich.console",
    "testfleet.progress",
    "testfleet.recheck",
    "testfleet.reports.coverage",
    "testfleet.reports.junit",
    "testfleet.reports.results_file",
    "testfleet.reports.summary",
    "testfleet.shards",
    "testfleet.verdict",
)


def _import_the_rest() -> None:
    import importlib
    import threading

    def work() -> None:
        for name in _LATER:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    threading.Thread(target=work, name="testfleet-imports", daemon=True).start()


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
                    type=argument_type(option.parse),
                    help=help_text,
                )
    _add_selection(run)
    commands.add_parser("doctor", help="show which backends and binaries this machine has")
    commands.add_parser(
        "prune", help="remove the containers kept by reuse = true that no run uses now"
    )
    merge = commands.add_parser(
        "merge",
        help="join the shard directories of a CI run into one set of reports",
        description="Default: every directory under .testfleet/shards/.",
    )
    merge.add_argument("dirs", nargs="*", metavar="DIR", help="shard directories")
    add_ci_parser(commands)
    return parser


def _add_selection(run: argparse.ArgumentParser) -> None:
    """What picks the tests, as pytest spells it: `testfleet run tests/test_api.py -k order`."""
    run.add_argument(
        "selection",
        nargs="*",
        metavar="PATH",
        help="test files, directories or node ids to run, as for pytest",
    )
    for names, help_text in (
        (("--lf", "--last-failed"), "run only the tests that failed last time (pytest's --lf)"),
        (("--ff", "--failed-first"), "run the tests that failed last time first (pytest's --ff)"),
        (("-x", "--exitfirst"), "stop handing out tests after the first failure (pytest's -x)"),
    ):
        run.add_argument(
            *names, dest=names[1].lstrip("-").replace("-", "_"), action="store_true", help=help_text
        )
    run.add_argument("-k", dest="keyword", metavar="EXPRESSION", help="pytest's -k")
    run.add_argument("-m", dest="markexpr", metavar="MARKEXPR", help="pytest's -m")


def selection_args(args: argparse.Namespace) -> list[str]:
    """The selection options of `run` as pytest arguments."""
    out = [
        flag
        for flag, dest in (("--lf", "last_failed"), ("--ff", "failed_first"), ("-x", "exitfirst"))
        if getattr(args, dest, False)
    ]
    if getattr(args, "keyword", None):
        out += ["-k", args.keyword]
    if getattr(args, "markexpr", None):
        out += ["-m", args.markexpr]
    return out + list(getattr(args, "selection", None) or [])


def main(
    argv: Sequence[str] | None = None,
    *,
    early: EarlyLane | None = None,
    started: float | None = None,
) -> int:
    """`early`: lane 1's interpreter, started before testfleet was imported; `started`: when
    the command started (time.monotonic())."""
    started = time.monotonic() if started is None else started
    args_list = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, extra = args_list[:cut], args_list[cut + 1 :]
    try:
        with signals_as_exceptions():
            args = build_parser().parse_args(args_list)
            return dispatch(
                args,
                extra,
                args_list + (["--", *extra] if extra else []),
                early=EarlyLanes(early),
                started=started,
            )
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


def dispatch(
    args: argparse.Namespace,
    extra: list[str],
    argv: Sequence[str] = (),
    *,
    early: EarlyLanes | None = None,
    started: float | None = None,
) -> int:
    start = Path(args.project)
    if not start.is_dir():
        raise ConfigError(f"-C {args.project}: no such directory")
    if args.command == "doctor":
        from testfleet.doctor import doctor

        try:
            project: Project | None = load_project(start, environ=os.environ)
        except ConfigError:
            project = None
        return doctor(project)
    if args.command == "prune":
        from testfleet.backends.docker import prune_reused

        removed = prune_reused()
        print(f"removed {len(removed)} kept container(s)" + "".join(f"\n  {n}" for n in removed))
        return 0
    if args.command == "merge":
        return merge_command(load_project(start, environ=os.environ), args.dirs)
    if args.command == "ci":
        from testfleet.ci import ci_command

        return ci_command(args, load_project(start, environ=os.environ))
    if extra and args.command != "run":
        raise ConfigError(f"arguments after -- go to pytest, which only 'run' starts: {extra}")
    cli = {o.key: getattr(args, o.dest) for o in OPTIONS}
    cli["extra_pytest_args"] = [*selection_args(args), *extra]
    project = load_project(start, cli=cli, environ=os.environ)
    # Everything a user can get wrong is found here, before anything starts.
    check_paths(project, args.command)
    lanes = 1 if args.command == "up" else resolve_lanes(project.config)
    note = None
    if args.command == "run":
        chosen = lanes_for_selection(
            project, lanes, args.selection, last_failed=bool(args.last_failed)
        )
        if chosen != lanes:
            note = f'lanes = "auto": {chosen} lane(s) for the selected tests\' measured time'
            lanes = chosen
    # Every Python version of the matrix runs its own lanes on the one stack.
    check_lanes(project.config, lanes * len(project.config.python or ("",)))
    if args.command == "run" and project.config.network == "namespace":
        if early is not None:
            early.close()  # lanes start in their namespaces, once those exist
        _into_own_user_namespace(argv)
    if args.command == "up":
        return up(project)
    if args.command == "plan":
        return plan_command(project, lanes)
    return run(project, lanes, early=early or EarlyLanes(), started=started, note=note)


def _start(project: Project, run: Run, stack: LaneProvider, lanes: int) -> list[LaneEnv]:
    """Start the stack and provision every lane (in parallel); say how long it took."""
    began = time.perf_counter()
    stack.start()
    envs = in_parallel([partial(stack.provision, n) for n in range(1, lanes + 1)])
    names = ", ".join(project.config.services) or "no services"
    what = "lanes" if isinstance(stack, SharedStack) else "stack"
    whence = ", from the running `testfleet up`" if isinstance(stack, SharedStack) else ""
    say(
        f"{what} ready in {time.perf_counter() - began:.2f} s ({names}, {lanes} lane(s){whence});"
        f" run {run.run_dir.run_id}"
    )
    return envs


def _logs_dir(project: Project) -> Path:
    return project.root / ".testfleet" / "logs"


def up(project: Project) -> int:
    from testfleet.up_server import DEV_LANE, UpServer

    binaries = resolve_binaries(project)
    dotenv = project.path(project.config.dotenv)
    warm, refusal = _warm_lanes(project)
    with (
        dotenv_lock(dotenv),
        Run(
            _base(project),
            keep_logs=_logs_dir(project),
            owned_files=(dotenv, descriptor_path(project)),
        ) as run,
    ):
        stack = Stack(project, run, binaries, lanes=DEV_LANE + warm)
        server: UpServer | None = None
        try:
            (lane,) = _start(project, run, stack, 1)
            # The developer's lane is one lane, whatever the up keeps warm for runs (and
            # TESTFLEET_LANES is also the lanes option of a `testfleet run` in that shell).
            env = {**lane.env, "TESTFLEET_LANES": "1"}
            for key, value in env.items():
                print(f"export {key}={shlex.quote(value)}")
            sys.stdout.flush()
            write_dotenv(dotenv, env)
            server = UpServer(project, stack, warm=warm, shareable=refusal)
            server.warm_up()
            server.publish()
            if refusal is None:
                say(f"`testfleet run` in this project uses this stack ({warm} lane(s) kept warm)")
            else:
                say(f"`testfleet run` starts its own stack: {refusal}")
            say(f"env written to {dotenv}; Ctrl-C stops the stack")
            while True:
                server.serve(WATCH_INTERVAL_SECONDS)
        finally:
            # A second Ctrl-C must not cut this short: a worker halfway through stopping a
            # lane's server would leave it running.
            with teardown_shield():
                if server is not None:
                    server.close()
                try:
                    stack.stop()
                finally:
                    if server is not None:
                        server.join_workers()
                    remove_if_ours(dotenv, run.run_dir.run_id)


def _warm_lanes(project: Project) -> tuple[int, str | None]:
    """How many lanes `up` keeps warm for runs (-n/lanes, within what the services allow
    beside the developer's lane), or 0 and why no run can share the stack."""
    from testfleet.up_server import DEV_LANE

    why = not_shareable(project)
    if why is not None:
        return 0, why
    warm = resolve_lanes(project.config)
    while True:
        try:
            check_lanes(project.config, DEV_LANE + max(warm, 1))
        except ConfigError as exc:
            if warm <= 1:
                return 0, exc.message
            warm -= 1
            continue
        return warm, None


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


@dataclass(frozen=True)
class RunPlan:
    """What a run is made of before anything starts: its Python targets, their lanes, and
    the work each group's lanes will do."""

    targets: list[PythonTarget]
    label_of: dict[str, str]  # target label -> group label ("" without a matrix)
    versions: dict[str, str]  # group label -> full Python version
    lanes: int  # per target
    work: WorkSource
    measured: dict[str, float]
    shard: tuple[int, int] | None
    keep_order: bool

    @property
    def total_lanes(self) -> int:
        return self.lanes * len(self.targets)

    def target_of(self, lane: int) -> PythonTarget:
        return self.targets[(lane - 1) // self.lanes]

    def group_of(self, lane: int) -> str:
        return self.label_of[self.target_of(lane).label]


def plan_run(project: Project, lanes: int) -> RunPlan:
    config = project.config
    from testfleet.envs import prepare_targets

    targets = prepare_targets(project, say=say)
    matrix = config.python is not None and is_version(config.python[0])
    label_of = {t.label: (t.label if matrix else "") for t in targets}
    measured = durations.load(project.path(config.durations), project.root)
    shard = _shard(config.shard)
    # Shards on machines with different core counts must still split alike: the order of a
    # shard never depends on how many lanes this machine runs.
    keep_order = config.order == "pytest" or (
        config.order == "auto" and lanes == 1 and shard is None
    )
    failed_first = {"--ff", "--failed-first"} & set(config.pytest_args)
    work = work_source(
        measured,
        config.group_by,
        keep_order=keep_order,
        lanes=lanes,
        shard=shard,
        first=frozenset(pytest_cache.lastfailed(project) if failed_first else ()),
    )
    versions = {label_of[t.label]: t.version for t in targets}
    return RunPlan(targets, label_of, versions, lanes, work, measured, shard, keep_order)


def run(
    project: Project,
    lanes: int,
    *,
    early: EarlyLanes,
    started: float | None = None,
    note: str | None = None,
) -> int:
    """`note`: said after the first line (which says whose stack the run uses)."""
    config = project.config
    started = time.monotonic() if started is None else started
    connection = None if config.own_stack else _running_up(project, lanes)
    if note is not None:
        say(note)
    binaries = {} if connection is not None else resolve_binaries(project)
    plan_ = plan_run(project, lanes)
    shard, versions, total_lanes = plan_.shard, plan_.versions, plan_.total_lanes
    # Setup commands and command services use the first version's interpreter.
    stack_project = dataclasses.replace(
        project, config=config.model_copy(update={"python": (plan_.targets[0].python,)})
    )
    deadline = time.monotonic() + config.timeout if config.timeout else None
    interactive = sys.stderr.isatty()
    with Run(_base(project), keep_logs=_logs_dir(project)) as run_:
        stack: LaneProvider = (
            SharedStack(project, run_, connection, total_lanes)
            if connection is not None
            else Stack(stack_project, run_, binaries, lanes=total_lanes)
        )
        try:
            if config.network != "namespace":
                _start_early(early, plan_, run_)
            envs = _start(project, run_, stack, total_lanes)
            coverage_dir = private_dir(run_.run_dir.path / "coverage") if config.coverage else None
            socket_path = private_dir(run_.run_dir.path / "queue") / "queue.sock"

            launch_spec = launch(
                project,
                stack,
                {e.lane: e for e in envs},
                run_.run_dir.path,
                socket_path=socket_path,
                coverage_dir=coverage_dir,
                interactive=interactive,
                mark=run_.run_dir.mark,
                on_spawn=partial(_spawned, run_, stack),
                python_of=lambda n: plan_.target_of(n).python,
                group_of=plan_.group_of,
                coverage_rcfile=_rcfile(project) if coverage_dir else "",
                early=early.take,
            )
            progress = _progress(launch_spec.log_path(1) is None)
            coordinator = Coordinator(
                launch_spec,
                total_lanes,
                socket_path,
                work=plan_.work,
                test_timeout=config.test_timeout,
                deadline=deadline,
                progress=progress,
                watch=stack.problem,
            )
            lanes_began = time.perf_counter()
            interruption: BaseException | None = None
            _import_the_rest()
            try:
                coordinator.run()
            except (KeyboardInterrupt, Interrupted) as exc:
                interruption = exc
            lanes_wall = time.perf_counter() - lanes_began
            outcome = coordinator.outcome()
            if interruption is None and outcome.fatal is None and not outcome.timed_out:
                try:
                    outcome = _rechecked(project, stack, run_, plan_, outcome, deadline=deadline)
                except (KeyboardInterrupt, Interrupted) as exc:
                    # The run's own results stand: reports are written, rechecks are not.
                    say("rechecks stopped by an interrupt")
                    interruption = exc
            from testfleet import shards
            from testfleet.reports import coverage as coverage_report

            if shard is not None:
                outcome = shards.label(outcome, shard)
            # Stopped before anything was collected: the last run's reports stay as they are
            # rather than being replaced by empty ones. A shard leaves the durations file as it
            # found it (every shard must plan from the same one); merge brings its times home.
            report_problems = (
                _write_reports(
                    project,
                    outcome.results,
                    [
                        error
                        for group in outcome.groups
                        for error in collection_errors(group.collect_errors, group.label)
                    ],
                    versions,
                    measured={}
                    if shard is not None
                    else {r.nodeid: r.duration for r in outcome.results if r.timed},
                    lastfailed=True,
                )
                if outcome.collected
                else []
            )
            cov = coverage_report.combine(project, coverage_dir) if coverage_dir else None
            if shard is not None and outcome.collected:
                shards.write_shard(
                    project,
                    shard,
                    outcome,
                    versions,
                    measured=plan_.measured,
                    keep_order=plan_.keep_order,
                    coverage_dir=coverage_dir,
                )
        finally:
            early.close()
            stack.stop()
    return _conclude(
        project,
        outcome,
        versions,
        shard=shard,
        cov=cov,
        report_problems=report_problems,
        interruption=interruption,
        wall=lanes_wall,
        total=time.monotonic() - started,
        first_result=None if outcome.first_result_at is None else outcome.first_result_at - started,
    )


def _spawned(run_: Run, stack: LaneProvider, pid: int) -> None:
    """Every lane process is recorded (the reaper stops it if testfleet is killed); a
    running up whose lanes it uses is told too."""
    run_.run_dir.record(pid)
    note_spawned(pid)
    if isinstance(stack, SharedStack):
        stack.note_process(pid)


def _running_up(project: Project, lanes: int) -> Connection | None:
    """The `testfleet up` of this project whose stack the run uses, said on the first line;
    or why a running one is not used."""
    config = project.config
    versions = len(config.python) if config.python and is_version(config.python[0]) else 1
    connection, why_not = find_up(project, lanes * versions)
    if why_not is not None:
        say(why_not)
    if connection is not None:
        welcome = connection.welcome
        say(
            f"using the stack of the running `testfleet up` (pid {welcome.get('pid')},"
            f" run {welcome.get('run_id')}); --own-stack starts one for this run"
        )
    return connection


def _start_early(early: EarlyLanes, plan_: RunPlan, run_: Run) -> None:
    """Interpreters and pytest load while the services start (not in lane namespaces, which
    exist only once the lanes are provisioned)."""
    if early_lanes.enabled():
        for n in range(1, plan_.total_lanes + 1):
            python = plan_.target_of(n).python
            early.start(n, python, early_environ(run_.run_dir.path, python))
    early.drop_spare()


def _progress(lanes_on_terminal: bool) -> Progress:
    """None when one lane prints to the terminal itself; live on a terminal; else lines."""
    from testfleet import progress

    if lanes_on_terminal:
        return progress.NullProgress()
    if sys.stderr.isatty():
        from rich.console import Console

        return progress.LiveProgress(Console(stderr=True, soft_wrap=True))
    return progress.PlainProgress()


def _recheck_collection(
    project: Project,
    stack: LaneProvider,
    run_: Run,
    plan_: RunPlan,
    outcome: RunOutcome,
    *,
    next_lane: Callable[[], int],
) -> RunOutcome:
    """Modules that did not import in the run: the one they need imported first is named in
    their collection error (a run of one file often meets this)."""
    from testfleet import recheck

    python_of = {plan_.label_of[t.label]: t.python for t in plan_.targets}
    groups = []
    for group in outcome.groups:
        errors = dict(group.collect_errors)
        candidates = project_modules(project, python_of[group.label]) if errors else []
        run = recheck_runner(
            project,
            stack,
            run_.run_dir.path,
            python=python_of[group.label],
            mark=run_.run_dir.mark,
            next_lane=next_lane,
            durations={},
            test_timeout=None,
            deadline=None,
            collect_only=True,
        )
        for module, text in list(errors.items())[: recheck.MAX_RECHECKED]:
            say(f"rechecking the collection of {module}")
            try:
                # pytest's "E   NameError: ..." line, without its margin.
                last = (text.strip().splitlines() or ["collection failed"])[-1]
                last = re.sub(r"^E\s+", "", last.strip())
                verdict = recheck.recheck_collection(module, candidates, run, last)
            except TestfleetError as exc:
                say(f"rechecks stopped: {exc.message}")
                break
            if verdict.culprit:
                errors[module] = f"{text}\n\n{verdict.text}"
                say(f"{module}: {verdict.text}")
        groups.append(dataclasses.replace(group, collect_errors=errors))
    return dataclasses.replace(outcome, groups=tuple(groups))


def _into_own_user_namespace(argv: Sequence[str]) -> None:
    """A user other than root runs namespaced lanes from a user namespace of its own: this
    command starts again there (same pid, same uid; nothing has started yet)."""
    from testfleet import netns

    if not netns.needs_user_namespace():
        return
    environ = {**os.environ, netns.USERNS_VARIABLE: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("unshare", netns.reexec_argv(argv), environ)


def _rechecked(
    project: Project,
    stack: LaneProvider,
    run_: Run,
    plan_: RunPlan,
    outcome: RunOutcome,
    *,
    deadline: float | None,
) -> RunOutcome:
    """Failed tests run again in fresh lanes: `--rerun-flaky` turns a later pass into a flaky
    pass; `--recheck` names the earlier test that makes one fail (see recheck.py)."""
    from testfleet import recheck
    from testfleet.kinds import KINDS

    config = project.config
    broken = sum(len(g.collect_errors) for g in outcome.groups)
    failures = sum(1 for r in outcome.results if r.failing)
    check = recheck.wanted(config.recheck, failures + broken, ci=bool(os.environ.get("CI")))
    if failures + broken == 0 or not (check or config.rerun_flaky):
        return outcome
    # A shared server with a place per lane (Valkey's DB numbers) has places for so many.
    limits = [
        (name, KINDS[spec.kind], slots)
        for name, spec in config.services.items()
        if (slots := KINDS[spec.kind].slots_for(spec)) is not None
    ]
    lanes = itertools.count(plan_.total_lanes + 1)

    def next_lane() -> int:
        lane = next(lanes)
        for name, kind, slots in limits:
            if lane > slots.count:
                raise ServiceError(
                    f"a recheck lane would need one more of {name}'s {slots.count}"
                    f" {slots.what} ({kind.label}), and every one is taken"
                )
        return lane

    python_of = {plan_.label_of[t.label]: t.python for t in plan_.targets}
    durations = {r.nodeid: r.duration for r in outcome.results if r.timed}

    def runner_for(group: str) -> recheck.Runner:
        return recheck_runner(
            project,
            stack,
            run_.run_dir.path,
            python=python_of[group],
            mark=run_.run_dir.mark,
            next_lane=next_lane,
            durations=durations,
            test_timeout=config.test_timeout,
            deadline=deadline,
        )

    # The lanes are done: their servers go (their ports and memory are the rechecks' now).
    for lane in range(1, plan_.total_lanes + 1):
        stack.release(lane)
    if check and broken:
        outcome = _recheck_collection(project, stack, run_, plan_, outcome, next_lane=next_lane)
    if failures == 0:
        return outcome
    say(f"rechecking {failures} failed test(s) in fresh lanes")
    try:
        updated = recheck.apply(
            outcome.results,
            outcome.predecessors,
            runner_for,
            check=check,
            reruns=config.rerun_flaky,
            say=say,
            stopped=outcome.stopping is not None,
        )
    except (OSError, ValueError) as exc:
        say(f"rechecks stopped: {exc}")
        return outcome
    by_key = {(r.python, r.nodeid): r for r in updated}
    groups = tuple(
        dataclasses.replace(
            group, results=tuple(by_key.get((r.python, r.nodeid), r) for r in group.results)
        )
        for group in outcome.groups
    )
    return dataclasses.replace(outcome, groups=groups)


def _conclude(
    project: Project,
    outcome: RunOutcome,
    versions: Mapping[str, str],
    *,
    shard: tuple[int, int] | None,
    cov: coverage_report.CoverageOutcome | None,
    report_problems: list[str],
    interruption: BaseException | None,
    wall: float,
    total: float,
    first_result: float | None = None,
) -> int:
    """Say what happened (notices, summary, where the reports are), then the exit code."""
    from rich.console import Console

    from testfleet import recheck, shards
    from testfleet.reports.summary import RunFacts, print_summary
    from testfleet.verdict import verdict

    config = project.config
    console = Console(stderr=True, soft_wrap=True)
    for notice in outcome.notices:
        say(notice)
    hint = recheck.shared_server_hint(
        [f"{r.message}\n{r.text}" for r in outcome.results if r.failing],
        [name for name, spec in config.services.items() if spec.isolation_mode == "database"],
    )
    if hint is not None:
        say(hint)
    print_summary(
        console,
        outcome.results,
        RunFacts(
            wall=wall,
            total=total,
            lanes=outcome.lanes,
            unknown_durations=sum(g.unknown_durations for g in outcome.groups),
            per_unknown=max((g.per_unknown for g in outcome.groups), default=0.0),
            coverage=cov,
            versions={k: v for k, v in versions.items() if k},
            first_result=first_result,
        ),
    )
    if not outcome.collected and interruption is not None:
        say("stopped before the suite was collected; the previous reports were left as they were")
    elif outcome.collected and not report_problems:
        junit = project.path(config.junit_xml)
        say(
            f"JUnit XML: {junit}"
            + (f"; coverage XML: {cov.xml}" if cov and cov.total is not None else "")
            + (f"; shard: {shards.shard_dir(project, shard, list(versions))}" if shard else "")
        )
    for problem in report_problems:
        error(problem)
    if interruption is not None:
        raise interruption
    result = verdict(outcome, cov, timeout=config.timeout)
    if result.fatal is not None:
        message, details, code = result.fatal
        raise TestfleetError(message, details=details, exit_code=code)
    for message, details in result.errors:
        error(message, details)
    if report_problems and result.code in (EXIT_OK, EXIT_TESTS_FAILED, EXIT_NO_TESTS):
        return EXIT_SERVICE
    return result.code


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    index, _, count = text.partition("/")
    return int(index), int(count)


def _rcfile(project: Project) -> str:
    from testfleet.reports import coverage as coverage_report

    found = coverage_report.config_file(project.root)
    return found if isinstance(found, str) else ""


def collection_errors(errors: Mapping[str, str], python: str = "") -> list[TestResult]:
    """Collection errors as results: the JUnit shows each as an errored test."""
    return [
        TestResult(nodeid, "error", message="collection error", text=text, python=python)
        for nodeid, text in errors.items()
    ]


def _write_reports(
    project: Project,
    results: Sequence[TestResult],
    errors: Sequence[TestResult],
    versions: Mapping[str, str],
    *,
    measured: Mapping[str, float],
    lastfailed: bool,
) -> list[str]:
    """The results file first (plain JSON, it cannot fail on odd characters), then every
    report from the same results; a report that fails is named, and the others still get
    written. `measured` durations are merged into the durations file. Returns what failed."""
    from testfleet.reports.junit import write_junit
    from testfleet.reports.results_file import write_results

    results_path = project.root / ".testfleet" / "results.json"
    collect_errors = {e.nodeid: e.text for e in errors}
    problems: list[str] = []

    def attempt(what: str, write: Callable[[], object]) -> None:
        try:
            write()
        except Exception as exc:
            problems.append(
                f"writing {what} failed ({type(exc).__name__}: {exc}); every result is in"
                f" {results_path}"
            )

    write_results(
        results_path, results, python=",".join(versions.values()), collect_errors=collect_errors
    )
    junit = project.path(project.config.junit_xml)
    attempt("the JUnit XML", lambda: write_junit(junit, [*errors, *results], versions=versions))
    if measured:
        path = project.path(project.config.durations)
        attempt("the durations", lambda: durations.merge(path, measured))
    if lastfailed:
        attempt(
            "pytest's lastfailed cache",
            lambda: pytest_cache.merge_lastfailed(project, results, collect_errors),
        )
    return problems


def merge_command(project: Project, dirs: Sequence[str]) -> int:
    """Join the shards: one JUnit with every collected test once, combined coverage,
    merged durations, the summary (and the CI page's), the exit code of the whole."""
    from rich.console import Console

    from testfleet import shards
    from testfleet.reports import coverage as coverage_report
    from testfleet.reports import step_summary
    from testfleet.reports.summary import RunFacts, print_summary
    from testfleet.verdict import collection_error_lines, coverage_verdict

    config = project.config
    found = shards.find_shard_dirs(project, dirs)
    console = Console(stderr=True, soft_wrap=True)
    with tempfile.TemporaryDirectory(prefix="testfleet-merge-") as pieces:
        merged = shards.merge_shards(project, found, Path(pieces))
        report_problems = _write_reports(
            project,
            merged.results,
            collection_errors(merged.collect_errors),
            merged.versions,
            measured=shards.merged_durations(found),
            lastfailed=False,
        )
        cov = coverage_report.combine(project, Path(pieces)) if merged.coverage_pieces else None
    matrix = {k: v for k, v in merged.versions.items() if k}
    print_summary(
        console,
        merged.results,
        RunFacts(
            wall=0.0,
            total=0.0,
            lanes=(),
            unknown_durations=0,
            per_unknown=0.0,
            coverage=cov,
            versions=matrix,
        ),
    )
    page = os.environ.get("GITHUB_STEP_SUMMARY")
    if page:
        step_summary.append(Path(page), step_summary.markdown(merged.results, merged.versions, cov))
    say(
        f"merged {len(found)} shard director{'y' if len(found) == 1 else 'ies'}"
        f" ({merged.shards} shard(s)): JUnit XML: {project.path(config.junit_xml)}"
    )
    for problem in report_problems:
        error(problem)
    for message, details in collection_error_lines(merged.collect_errors):
        error(message, details)
    for problem in merged.problems:
        error(f"{problem}; its tests that did not run are reported as not run")
    unrun = [r for r in merged.results if r.outcome == "not run"]
    if unrun and not merged.problems:
        error(f"{len(unrun)} test(s) did not run in their shard (e.g. {unrun[0].nodeid})")
    if merged.collect_errors or merged.problems or unrun:
        return EXIT_TESTS_FAILED
    if any(r.failing for r in merged.results):
        return EXIT_TESTS_FAILED
    result = coverage_verdict(cov)
    for message, details in result.errors:
        error(message, details)
    return EXIT_SERVICE if report_problems and result.code == EXIT_OK else result.code


def plan_command(project: Project, lanes: int) -> int:
    from testfleet.envs import prepare_targets

    config = project.config
    # With a matrix, the first version's environment collects (made or reused as for run).
    matrix = config.python is not None and is_version(config.python[0])
    nodeids = collect(project, prepare_targets(project, say=say)[0].python if matrix else None)
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


def read_dotenv(path: Path) -> dict[str, str]:
    """What write_dotenv wrote (for tools that run pytest with an up's env themselves)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        values[key] = shlex.split(value)[0] if value else ""
    return values
