"""Rechecks in fresh lanes of the run's stack: the runner that the search in culprit.py
calls, and what the run does with its findings (verdicts on failed tests, a flaky test
turned into a flaky pass, the module a collection error needs imported first)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testfleet.console import say
from testfleet.errors import ServiceError, TestfleetError
from testfleet.kinds import KINDS
from testfleet.lanes.collection import collected, planning_args
from testfleet.lanes.launch import lane_dir, lane_environ, own_dirs, pytest_argv
from testfleet.lanes.outcome import RunOutcome
from testfleet.lanes.state import timed_out
from testfleet.project import Project
from testfleet.recheck import culprit
from testfleet.recheck.culprit import CollectionFailed
from testfleet.recheck.watch import Watched, watch
from testfleet.runtime import Run
from testfleet.stack import LaneProvider

# A recheck run may take its tests' measured time twice over, plus start-up.
RECHECK_BASE_SECONDS = 60.0
# Options that pick tests by pytest's cache or deselect: a recheck names its tests itself.
# So are -x and --maxfail: a failing predecessor must not keep the test itself from running.
_SELECTION_FLAGS = {
    "-x",
    "--exitfirst",
    "--lf",
    "--last-failed",
    "--ff",
    "--failed-first",
    "--nf",
    "--new-first",
    "--sw",
    "--stepwise",
    "--sw-skip",
    "--stepwise-skip",
}


def project_modules(project: Project, python: str) -> list[str]:
    """The suite's test files in pytest's collection order, as its configuration finds them
    without the run's own path arguments: the candidates a module may need imported first."""
    _, _, report = collected(project, python, recheck_args(project, planning_args(project)))
    nodeids = report["nodeids"] if report else []
    return list(dict.fromkeys(nodeid.split("::", 1)[0] for nodeid in nodeids))


def recheck_args(project: Project, args: Sequence[str]) -> list[str]:
    """The run's pytest arguments without what selects tests (paths, node ids, --lf,
    --deselect): a recheck runs exactly the node ids it names, in its order."""
    kept: list[str] = []
    skip_next = keep_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        if keep_next or arg in ("-k", "-m"):  # an expression, even one that looks like a path
            keep_next = not keep_next
            kept.append(arg)
            continue
        if arg in _SELECTION_FLAGS or arg.startswith(("--deselect=", "--maxfail=")):
            continue
        if arg in ("--deselect", "--maxfail"):
            skip_next = True
            continue
        if not arg.startswith("-") and ("::" in arg or (project.root / arg).exists()):
            continue
        kept.append(arg)
    return kept


class RunTimedOut(ServiceError):
    """The run's timeout came during the rechecks: they stop, and the run's results stand
    as the lanes left them (its tests all ran; only their diagnosis was cut short)."""


@dataclass
class Budget:
    """The run's timeout as the rechecks see it: each recheck ends by it, and once it has
    struck no other recheck starts."""

    deadline: float | None
    struck: bool = False

    def check(self) -> None:
        """Refuse to start a recheck that could not even start before the deadline."""
        if self.deadline is not None and self.deadline - time.monotonic() <= 1:
            self.struck = True
            raise RunTimedOut("the run's timeout came")


def recheck_runner(
    project: Project,
    stack: LaneProvider,
    run_dir: Path,
    *,
    python: str,
    mark: str,
    next_lane: Callable[[], int],
    durations: Mapping[str, float],
    test_timeout: float | None,
    budget: Budget,
    collect_only: bool = False,
) -> culprit.Runner:
    """Runs node ids, in order, in a fresh lane (new services), then releases that lane:
    what it said of the last of them. Each test gets the run's test timeout, as in the
    lanes; the whole ends by the run's timeout."""

    def run(nodeids: Sequence[str]) -> culprit.Attempt:
        # A backstop for a pytest that hangs outside any test (collection, session teardown).
        limit = RECHECK_BASE_SECONDS + 2 * sum(durations.get(n, 0.0) for n in nodeids)
        limit += test_timeout or 0.0
        budget.check()
        number = next_lane()
        try:
            lane = stack.provision(number)
            folder = lane_dir(run_dir, lane.lane)
            events = folder / "recheck.jsonl"
            argv = pytest_argv(
                python,
                # The reporter of what happens (the lane plugin has no queue here).
                "-p",
                "testfleet.worker.recheck",
                # Their order is the point: keep plugins from shuffling it.
                "-p",
                "no:randomly",
                "-q",
                *(["--collect-only"] if collect_only else []),
                *recheck_args(project, stack.expand_args(project.config.pytest_args, lane)),
                *own_dirs(folder),
                *nodeids,
            )
            if lane.namespace is not None:
                argv = lane.namespace.wrap(argv)
            env = lane_environ(project, lane, run_dir, Path(), None, mark=mark, python=python)
            env.pop("TESTFLEET_QUEUE", None)
            env["TESTFLEET_RECHECK_FILE"] = str(events)
            supervisor = stack.run.supervisor
            process = supervisor.spawn(
                f"recheck (lane {lane.lane})",
                argv,
                log_path=folder / "recheck.log",
                env=env,
                cwd=project.root,
                signal_group=True,
                stop_signal=signal.SIGKILL,
            )
            try:
                watched = watch(
                    process,
                    events,
                    test_timeout=test_timeout,
                    limit=limit,
                    deadline=budget.deadline,
                )
            finally:
                supervisor.forget(process)
            if watched.deadline_struck:
                budget.struck = True
                raise RunTimedOut("the run's timeout came")
            return _attempt(watched, nodeids, test_timeout, limit, collect_only=collect_only)
        finally:
            stack.release(number)
            shutil.rmtree(lane_dir(run_dir, number), ignore_errors=True)

    return run


def _attempt(
    watched: Watched,
    nodeids: Sequence[str],
    test_timeout: float | None,
    limit: float,
    *,
    collect_only: bool,
) -> culprit.Attempt:
    """What a recheck's pytest said of the last test it was given. A test stopped at the
    test timeout failed, as in the lanes; stopped under another test, it never ran."""
    target = nodeids[-1]
    outcome = watched.outcomes.get(target) if target in watched.finished else None
    target_file = target.split("::", 1)[0]
    errors = watched.collection_errors
    if (outcome is None or collect_only) and target_file in errors:
        raise CollectionFailed(errors[target_file])
    if collect_only:
        if watched.code is None:
            return culprit.Attempt(None, f"its collection ran past {limit:.0f} s")
        return culprit.Attempt(True)
    if outcome is not None:
        return culprit.Attempt(
            outcome == "passed", "" if outcome in ("passed", "failed") else outcome
        )
    if watched.overdue is not None and test_timeout is not None:
        took = timed_out(test_timeout)
        if watched.overdue == target:
            return culprit.Attempt(False, took, watched.took)
        return culprit.Attempt(None, f"{watched.overdue} {took} before it")
    if watched.out_of_time:
        return culprit.Attempt(None, f"the recheck ran past {limit:.0f} s")
    return culprit.Attempt(None, "its pytest ended before it reported")


def recheck_outcome(
    project: Project,
    stack: LaneProvider,
    run: Run,
    outcome: RunOutcome,
    *,
    lanes: int,
    python_of: Callable[[str], str],
    deadline: float | None,
) -> RunOutcome:
    """Failed tests run again in fresh lanes, numbered after the run's `lanes`:
    `--rerun-flaky` turns a later pass into a flaky pass; `--recheck` names the earlier test
    that makes one fail (see culprit.py), or the module a module needs imported first."""
    config = project.config
    broken = sum(len(g.collect_errors) for g in outcome.groups)
    failures = sum(1 for r in outcome.results if r.failing)
    check = culprit.wanted(config.recheck, failures + broken, ci=bool(os.environ.get("CI")))
    if failures + broken == 0 or not (check or config.rerun_flaky):
        return outcome
    next_lane = _lane_numbers(project, after=lanes)
    durations = {r.nodeid: r.duration for r in outcome.results if r.timed}
    budget = Budget(deadline)

    def runner(group: str, *, collect_only: bool = False) -> culprit.Runner:
        return recheck_runner(
            project,
            stack,
            run.run_dir.path,
            python=python_of(group),
            mark=run.run_dir.mark,
            next_lane=next_lane,
            durations={} if collect_only else durations,
            test_timeout=config.test_timeout,
            budget=budget,
            collect_only=collect_only,
        )

    # The lanes are done: their servers go (their ports and memory are the rechecks' now).
    for lane in range(1, lanes + 1):
        stack.release(lane)
    if check and broken:
        outcome = _recheck_collection(project, outcome, runner, python_of)
    if failures and not budget.struck:
        say(announcement(failures, reruns=config.rerun_flaky, check=check))
        outcome = _recheck_failures(outcome, runner, check=check, reruns=config.rerun_flaky)
    return outcome


def announcement(failures: int, *, reruns: int, check: bool) -> str:
    """What the rechecks of failed tests are about to do: `--rerun-flaky` reruns them,
    `--recheck` looks for an earlier test that breaks them (after the reruns, when both)."""
    rerun = f"rerunning {failures} failed test(s) in fresh lanes, up to {reruns} time(s) each"
    if not reruns:
        return f"rechecking {failures} failed test(s) in fresh lanes"
    return f"{rerun}, then rechecking what still fails" if check else rerun


def _recheck_failures(
    outcome: RunOutcome, runner: Callable[[str], culprit.Runner], *, check: bool, reruns: int
) -> RunOutcome:
    """Failed tests with their verdicts (see culprit.apply)."""
    try:
        updated = culprit.apply(
            outcome.results,
            outcome.predecessors,
            runner,
            check=check,
            reruns=reruns,
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


def _lane_numbers(project: Project, *, after: int) -> Callable[[], int]:
    """Lane numbers for rechecks, within what the services can give: a shared server with a
    place per lane (Valkey's DB numbers) has places for so many."""
    limits = [
        (name, KINDS[spec.kind], slots)
        for name, spec in project.config.services.items()
        if (slots := KINDS[spec.kind].slots_for(spec)) is not None
    ]
    numbers = itertools.count(after + 1)

    def next_lane() -> int:
        lane = next(numbers)
        for name, kind, slots in limits:
            if lane > slots.count:
                raise ServiceError(
                    f"a recheck lane would need one more of {name}'s {slots.count}"
                    f" {slots.what} ({kind.label}), and every one is taken"
                )
        return lane

    return next_lane


def _recheck_collection(
    project: Project,
    outcome: RunOutcome,
    runner: Callable[..., culprit.Runner],
    python_of: Callable[[str], str],
) -> RunOutcome:
    """Modules that did not import in the run: the one they need imported first is named in
    their collection error (a run of one file often meets this). A recheck that cannot run
    (the run's timeout came, no lane left) stops them all; what was found stays."""
    groups = list(outcome.groups)
    try:
        for index, group in enumerate(groups):
            errors = dict(group.collect_errors)
            candidates = project_modules(project, python_of(group.label)) if errors else []
            run = runner(group.label, collect_only=True)
            for module, text in list(errors.items())[: culprit.MAX_RECHECKED]:
                say(f"rechecking the collection of {module}")
                # pytest's "E   NameError: ..." line, without its margin.
                last = (text.strip().splitlines() or ["collection failed"])[-1]
                last = re.sub(r"^E\s+", "", last.strip())
                found = culprit.recheck_collection(module, candidates, run, last)
                if found.culprit:
                    errors[module] = f"{text}\n\n{found.text}"
                    groups[index] = dataclasses.replace(group, collect_errors=dict(errors))
                    say(f"{module}: {found.text}")
    except TestfleetError as exc:
        say(f"rechecks stopped: {exc.message}")
    return dataclasses.replace(outcome, groups=tuple(groups))
