"""`testfleet run`: find a running up -> the run (its directory and reaper) -> plan -> open the
stack -> run the lanes -> recheck -> write the reports -> conclude. Each step takes and returns
plain values; the run lives from before its venvs are made (plan) to the end, the stack for
the steps between opening it and writing the reports, whatever happens in them."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rich.console import Console

from testfleet import netns, shards
from testfleet.binaries import Binary
from testfleet.commands import Call
from testfleet.commands.common import logs_dir, project_for, run_base, start_stack
from testfleet.config_rules import check_lanes
from testfleet.console import error, say
from testfleet.errors import Interrupted, TestfleetError
from testfleet.files import private_dir
from testfleet.interpreter import SETTING, shown
from testfleet.kinds import credential_signs
from testfleet.lanes import early, lingering, measure
from testfleet.lanes.coordinator import Coordinator
from testfleet.lanes.count import lanes_for_selection, lanes_for_units, resolve_lanes
from testfleet.lanes.early import EarlyLanes
from testfleet.lanes.launch import early_environ, launch
from testfleet.lanes.outcome import RunOutcome
from testfleet.lanes.progress import LiveProgress, NullProgress, PlainProgress, Progress
from testfleet.options import RUN, add_options
from testfleet.preflight import check_paths
from testfleet.processes import note_spawned
from testfleet.project import Project
from testfleet.recheck.culprit import auth_hint, export_hint, shared_server_hint
from testfleet.recheck.lanes import recheck_outcome
from testfleet.reports import coverage as coverage_report
from testfleet.reports import github, step_summary
from testfleet.reports.summary import RunFacts, print_summary
from testfleet.reports.write import collection_errors, write_reports
from testfleet.run_plan import RunPlan, plan_run
from testfleet.runtime import Run
from testfleet.stack import LaneProvider, Stack, in_parallel, resolve_binaries
from testfleet.up.client import Connection, find_up
from testfleet.up.shared_stack import SharedStack
from testfleet.venvs.build import VENVS_DIR
from testfleet.verdict import Facts, verdict

# pytest's own selection options, spelled as pytest spells them: (flags, dest, help).
SELECTION = (
    (("--lf", "--last-failed"), "last_failed", "run only the tests that failed last time"),
    (("--ff", "--failed-first"), "failed_first", "run the tests that failed last time first"),
    (("-x", "--exitfirst"), "exitfirst", "stop handing out tests after the first failure"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Arguments after -- go to pytest."
    add_options(parser, RUN)
    parser.add_argument(
        "selection", nargs="*", metavar="PATH", help="test files, directories or node ids to run"
    )
    for flags, dest, help_text in SELECTION:
        parser.add_argument(*flags, dest=dest, action="store_true", help=f"{help_text} (pytest's)")
    parser.add_argument("-k", dest="keyword", metavar="EXPRESSION", help="pytest's -k")
    parser.add_argument("-m", dest="markexpr", metavar="MARKEXPR", help="pytest's -m")


def main(call: Call) -> int:
    project, lanes, note = configure(call)
    lanes_early = EarlyLanes(call.early)
    if project.config.network == "namespace":
        lanes_early.close()  # lanes start in their namespaces, once those exist
        into_own_user_namespace(call.argv)
    connection = None if project.config.own_stack else find_running_up(project, lanes)
    if note is not None:
        say(note)
    binaries = {} if connection is not None else resolve_binaries(project)
    # The run exists before its venvs are made: a uv that testfleet leaves behind when it is
    # killed mid-build is recorded there, for the run's reaper to stop. Its lanes are the
    # plan's: `lanes` for each Python version.
    with Run(
        run_base(project, lanes * project.config.versions), keep_logs=logs_dir(project)
    ) as run:
        plan = plan_run(project, lanes, run.run_dir)
        timeout = project.config.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        stack = open_stack(project, plan, run, connection, binaries)
        try:
            if project.config.network != "namespace":
                start_early(lanes_early, plan, run)
            ran = run_lanes(
                project, plan, run, stack, lanes_early, deadline=deadline, started=call.started
            )
            ran = recheck(project, plan, run, stack, ran, deadline=deadline)
            written = write(project, plan, ran, stack)
        finally:
            lanes_early.close()
            stack.stop()
    return conclude(project, plan, ran, written, started=call.started)


def configure(call: Call) -> tuple[Project, int, str | None]:
    """The project, and its lanes: `-n`, `auto` resolved for the machine and the selection.
    Everything a user can get wrong is found here, before anything starts. Returns what to
    say about the lanes, if anything (said after the first line)."""
    args = call.args
    project = project_for(call, RUN, {"extra_pytest_args": [*selection(args), *call.pytest_args]})
    check_paths(project, RUN)
    lanes = resolve_lanes(project.config)
    chosen = lanes_for_selection(project, lanes, args.selection, last_failed=args.last_failed)
    note = None
    if chosen != lanes:
        note = f'lanes = "auto": {chosen} lane(s) for the selected tests\' measured time'
    if (fewer := lanes_for_units(project, chosen, args.selection)) != chosen:
        note = (
            f"{fewer} lane(s) of {chosen}: the selected tests are in {fewer} module(s),"
            " and a module runs in one lane"
        )
        chosen = fewer
    # Every Python version of the matrix runs its own lanes on the one stack.
    check_lanes(project.config, chosen * project.config.versions)
    return project, chosen, note


def selection(args: argparse.Namespace) -> list[str]:
    """The selection options as pytest arguments."""
    out = [flags[0] for flags, dest, _ in SELECTION if getattr(args, dest)]
    out += ["-k", args.keyword] if args.keyword else []
    out += ["-m", args.markexpr] if args.markexpr else []
    return out + list(args.selection)


def into_own_user_namespace(argv: Sequence[str]) -> None:
    """A user other than root runs namespaced lanes from a user namespace of its own: this
    command starts again there (same pid, same uid; nothing has started yet)."""
    if not netns.needs_user_namespace():
        return
    environ = {**os.environ, netns.USERNS_VARIABLE: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("unshare", netns.reexec_argv(argv), environ)


def find_running_up(project: Project, lanes: int) -> Connection | None:
    """The `testfleet up` of this project whose stack the run uses, said on the first line;
    or why a running one is not used."""
    connection, why_not = find_up(project, lanes * project.config.versions)
    if why_not is not None:
        say(why_not)
    if connection is not None:
        welcome = connection.welcome
        say(
            f"using the stack of the running `testfleet up` (pid {welcome.get('pid')},"
            f" run {welcome.get('run_id')}); --own-stack starts one for this run"
        )
    return connection


def open_stack(
    project: Project,
    plan: RunPlan,
    run: Run,
    connection: Connection | None,
    binaries: Mapping[str, Binary],
) -> LaneProvider:
    """The run's lanes come from a running up, or from a stack of its own (whose setup
    commands and command services use the first version's interpreter)."""
    if connection is not None:
        return SharedStack(project, run, connection, plan.total_lanes)
    config = project.config.model_copy(update={"python": (plan.targets[0].python,)})
    own = dataclasses.replace(project, config=config)
    return Stack(own, run, binaries, lanes=plan.total_lanes)


def start_early(lanes: EarlyLanes, plan: RunPlan, run: Run) -> None:
    """Interpreters and pytest load while the services start (not in lane namespaces, which
    exist only once the lanes are provisioned)."""
    if early.enabled():
        for n in range(1, plan.total_lanes + 1):
            python = plan.target_of(n).python
            lanes.start(n, python, early_environ(run.run_dir.path, python))
    lanes.drop_spare()


@dataclass(frozen=True)
class Ran:
    """What the lanes did (an interrupt that cut them short is in the outcome, raised again
    after the reports are written)."""

    outcome: RunOutcome
    wall: float  # seconds from the lanes' start to the last one's end
    coverage_dir: Path | None


def run_lanes(
    project: Project,
    plan: RunPlan,
    run: Run,
    stack: LaneProvider,
    lanes_early: EarlyLanes,
    *,
    deadline: float | None,
    started: float,
) -> Ran:
    """`started`: the command's start, from which progress counts, as the summary does."""
    config = project.config
    # Before the stack starts: its command services measure themselves into it too.
    measurement = (
        measure.prepare(run.run_dir.path, project.root, coverage_report.settings_path(project.root))
        if config.coverage
        else None
    )
    coverage_dir = measurement.data_dir if measurement is not None else None
    setups = start_stack(project, run, stack, plan.total_lanes, python=lanes_python(project, plan))
    socket_path = private_dir(run.run_dir.path / "queue") / "queue.sock"
    launch_spec = launch(
        project,
        stack,
        {setup.lane: setup for setup in setups},
        run.run_dir.path,
        socket_path=socket_path,
        coverage_dir=coverage_dir,
        interactive=sys.stderr.isatty(),
        mark=run.run_dir.mark,
        on_spawn=partial(_spawned, run, stack),
        python_of=lambda n: plan.target_of(n).python,
        group_of=plan.group_of,
        coverage_rcfile=measurement.settings if measurement is not None else "",
        early=lanes_early.take,
    )
    coordinator = Coordinator(
        launch_spec,
        plan.total_lanes,
        socket_path,
        work=plan.work,
        test_timeout=config.test_timeout,
        deadline=deadline,
        progress=progress(launch_spec.log_path(1) is None),
        watch=stack.problem,
        exit_grace=lingering.exit_grace(os.environ),
        started=started,
        prefer_imported=not plan.keep_order,
    )
    began = time.perf_counter()
    try:
        outcome = coordinator.run()
    except (KeyboardInterrupt, Interrupted) as exc:  # a second one, while lanes were stopped
        outcome = dataclasses.replace(coordinator.outcome(), interrupted=True, interruption=exc)
    return Ran(outcome, time.perf_counter() - began, coverage_dir)


def lanes_python(project: Project, plan: RunPlan) -> str:
    """Which interpreter the lanes run, and why that one (on the run's first line)."""
    if project.config.matrix:
        versions = ", ".join(t.version for t in plan.targets)
        return f"python {versions} (environments uv made in {VENVS_DIR})"
    target = plan.targets[0]
    where = shown(target.python, project.root)
    return f"python {where} ({target.version}, {project.interpreter.why})"


def _spawned(run: Run, stack: LaneProvider, pid: int) -> None:
    """Every lane process is recorded (the reaper stops it if testfleet is killed); a
    running up whose lanes it uses is told too."""
    run.run_dir.record(pid)
    note_spawned(pid)
    if isinstance(stack, SharedStack):
        stack.note_process(pid)


def progress(lanes_on_terminal: bool) -> Progress:
    """None when one lane prints to the terminal itself; live on a terminal; else lines."""
    if lanes_on_terminal:
        return NullProgress()
    if sys.stderr.isatty():
        return LiveProgress(Console(stderr=True, soft_wrap=True))
    return PlainProgress()


def recheck(
    project: Project,
    plan: RunPlan,
    run: Run,
    stack: LaneProvider,
    ran: Ran,
    *,
    deadline: float | None,
) -> Ran:
    """Failed tests again, in fresh lanes (see recheck/); not after an interrupt, a fault or
    the run's timeout. An interrupt here keeps the run's own results: reports are written."""
    outcome = ran.outcome
    if outcome.interruption is not None or outcome.fatal is not None or outcome.timed_out:
        return ran
    try:
        outcome = recheck_outcome(
            project,
            stack,
            run,
            outcome,
            lanes=plan.total_lanes,
            python_of=plan.python_of,
            deadline=deadline,
        )
    except (KeyboardInterrupt, Interrupted) as exc:
        say("rechecks stopped by an interrupt")
        return dataclasses.replace(ran, outcome=dataclasses.replace(outcome, interruption=exc))
    return dataclasses.replace(ran, outcome=outcome)


@dataclass(frozen=True)
class Written:
    problems: list[str]  # reports that could not be written
    coverage: coverage_report.CoverageOutcome | None


def write(project: Project, plan: RunPlan, ran: Ran, stack: LaneProvider) -> Written:
    """The reports, and a shard's directory. Stopped before anything was collected, the last
    run's reports stay as they are rather than being replaced by empty ones. A shard leaves
    the durations file as it found it (every shard must plan from the same one), and its
    coverage data for merge, which applies the threshold; merge brings its times home."""
    outcome = ran.outcome
    if plan.shard is not None:
        outcome = shards.label(outcome, plan.shard)
    problems = []
    if outcome.collected:
        problems = write_reports(
            project,
            outcome.results,
            [
                error
                for group in outcome.groups
                for error in collection_errors(group.collect_errors, group.label)
            ],
            plan.versions,
            measured={}
            if plan.shard is not None
            else {r.nodeid: r.duration for r in outcome.results if r.timed},
            lastfailed=True,
        )
    if ran.coverage_dir is not None:
        stop_measured_servers(stack, plan.total_lanes)
    coverage = None
    if plan.shard is not None:
        if outcome.collected:
            shard = shards.write_shard(
                project,
                plan.shard,
                outcome,
                plan.versions,
                measured=plan.measured,
                keep_order=plan.keep_order,
                coverage_dir=ran.coverage_dir,
            )
            if ran.coverage_dir is not None:
                coverage = coverage_report.partial(project, shards.coverage_file(shard))
    elif ran.coverage_dir is not None:
        coverage = coverage_report.combine(project, ran.coverage_dir)
    return Written(problems, coverage)


def stop_measured_servers(stack: LaneProvider, lanes: int) -> None:
    """The lanes' own servers stop (all lanes at once) before their coverage is combined: a
    command service saves its data when it is stopped. (A running up's servers are the up's,
    and not measured.)"""
    if isinstance(stack, Stack):
        in_parallel([partial(stack.release, lane) for lane in range(1, lanes + 1)])


def conclude(project: Project, plan: RunPlan, ran: Ran, written: Written, *, started: float) -> int:
    """Say what happened (notices, summary, where the reports are), then the exit code; an
    interrupt is raised again once all of that is said."""
    config, outcome, cov = project.config, ran.outcome, written.coverage
    for notice in outcome.notices:
        say(notice)
    failures = [f"{r.message}\n{r.text}" for r in outcome.results if r.failing]
    shared = [name for name, spec in config.services.items() if spec.isolation_mode == "database"]
    for hint in (
        shared_server_hint(failures, shared),
        auth_hint(failures, credential_signs(config.services)),
        export_hint(failures, config.services),
    ):
        if hint is not None:
            say(hint)
    first = outcome.first_result_at
    print_summary(
        Console(stderr=True, soft_wrap=True),
        outcome.results,
        RunFacts(
            wall=ran.wall,
            total=time.monotonic() - started,
            lanes=outcome.lanes,
            unknown_durations=sum(g.unknown_durations for g in outcome.groups),
            per_unknown=max((g.per_unknown for g in outcome.groups), default=0.0),
            coverage=cov,
            versions={k: v for k, v in plan.versions.items() if k},
            first_result=None if first is None else first - started,
        ),
    )
    if outcome.collected:
        report_to_ci(project, plan, outcome, cov)
    if not outcome.collected and outcome.interruption is not None:
        say("stopped before the suite was collected; the previous reports were left as they were")
    elif outcome.collected and not written.problems:
        where = f"JUnit XML: {project.path(config.junit_xml)}"
        if cov and cov.total is not None and cov.xml is not None:
            where += f"; coverage XML: {cov.xml}"
        if plan.shard:
            where += f"; shard: {shards.shard_dir(project, plan.shard, list(plan.versions))}"
        say(where)
    result = verdict(
        Facts(
            results=outcome.results,
            collect_errors=outcome.collect_errors,
            collected=any(group.collected for group in outcome.groups),
            coverage=cov,
            report_problems=written.problems,
            fatal=(outcome.fatal, outcome.fatal_details, outcome.fatal_code)
            if outcome.fatal
            else None,
            timed_out=(config.timeout or 0.0) if outcome.timed_out else None,
        )
    )
    if outcome.interruption is not None:
        for problem in written.problems:
            error(problem)
        raise outcome.interruption
    for message, details in result.errors:
        error(message, details)
    if result.fatal is not None:
        message, details, code = result.fatal
        if message.endswith(NOT_COLLECTED):
            message += f"; {cannot_start_hint(project, plan)}"
        raise TestfleetError(message, details=details, exit_code=code)
    return result.code


# How the coordinator says that a lane ended before pytest collected anything: the
# interpreter could not import pytest, a plugin or a conftest's imports.
NOT_COLLECTED = "before collecting tests"


def cannot_start_hint(project: Project, plan: RunPlan) -> str:
    """Which interpreter a lane that could not start ran, and which setting changes it."""
    ran = f"it ran {lanes_python(project, plan)}"
    if project.config.matrix:
        return (
            f"{ran}: add what the suite needs to the project's dependencies, extras or"
            f" dependency-groups, or set {SETTING} to run the lanes with your own interpreter"
        )
    return (
        f"{ran}: install what the suite needs there, or set {SETTING} to run the lanes with"
        " another interpreter"
    )


def report_to_ci(
    project: Project,
    plan: RunPlan,
    outcome: RunOutcome,
    coverage: coverage_report.CoverageOutcome | None,
) -> None:
    """On GitHub Actions: an annotation per failing test, where the pull request shows it,
    and this run's (this shard's) own Markdown summary on the job's page."""
    if github.enabled(os.environ):
        workspace = Path(os.environ.get("GITHUB_WORKSPACE") or Path.cwd())
        lines, more = github.error_lines(
            outcome.results, root=project.root, workspace=workspace, versions=plan.versions
        )
        for line in lines:
            print(line, flush=True)
        if more:
            say(
                f"{more} more failing test(s) not annotated (the first {len(lines)} are);"
                " every failure is in the summary above and in the JUnit XML"
            )
    page = os.environ.get("GITHUB_STEP_SUMMARY")
    if page:
        step_summary.append(
            Path(page),
            step_summary.markdown(
                outcome.results, plan.versions, coverage, title=run_title(plan.shard, plan.versions)
            ),
        )


def run_title(shard: tuple[int, int] | None, versions: Mapping[str, str]) -> str:
    """What a CI page calls this run: "testfleet: shard 1/2, Python 3.12.4"."""
    parts = [f"shard {shard[0]}/{shard[1]}"] if shard is not None else []
    pythons = [v for v in versions.values() if v]
    if pythons:
        parts.append("Python " + ", ".join(pythons))
    return "testfleet: " + ", ".join(parts) if parts else "testfleet"
