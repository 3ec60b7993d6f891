"""Naming why a test failed in its lane: run it again alone, in a fresh lane with fresh
services; if it passes there, it depends on what ran before it, and bisecting those tests
names the earliest one that makes it fail.

The logic is pure: it runs tests through a `Runner` (the real one provisions a new lane and
runs pytest there), so it is tested with fakes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from testfleet.errors import TestfleetError
from testfleet.kinds import KINDS, missed_exports
from testfleet.results import TestResult
from testfleet.specs import TABLE, ServiceSpec


@dataclass(frozen=True)
class Attempt:
    """What one run in a fresh lane said of the last test it was given."""

    passed: bool | None  # None: nothing (it hung past its time, crashed, or never got to it)
    # How it ended beyond passed or failed: "timed out after 2 s", "error", or why it said
    # nothing.
    how: str = ""
    took: float | None = None  # how long it ran, when that is part of the story (a timeout)

    def __str__(self) -> str:
        how = self.how or {True: "passed", False: "failed", None: "said nothing"}[self.passed]
        return how if self.took is None else f"{how} ({self.took:.1f} s)"


# Runs `nodeids` in this order in a fresh lane: what it said of the last of them.
Runner = Callable[[Sequence[str]], Attempt]
Kind = Literal[
    "fails alone",
    "order dependent",
    "flaky",
    "passed on rerun",
    "failed on rerun",
    "inconclusive",
    "collection order",
]


class CollectionFailed(Exception):
    """A runner's run could not even collect the test (its module did not import)."""


# A predecessor list this long takes log2(N) + 2 runs: 12 for 1,000 tests.
MAX_RUNS_PER_TEST = 24


@dataclass(frozen=True)
class Diagnosis:
    kind: Kind
    culprit: str | None = None
    runs: int = 0
    error: str = ""  # the collection error, for "collection order"
    # What the runs that decided it said of the test ("fails alone", "failed on rerun").
    attempts: tuple[Attempt, ...] = ()

    @property
    def text(self) -> str:
        if self.kind == "order dependent" and self.culprit:
            return f"order dependent: passes alone, fails after {self.culprit}"
        if self.kind == "order dependent":
            return "order dependent: passes alone, fails after the tests its lane ran before it"
        if self.kind == "flaky":
            return "flaky: passed on re-run alone and after its predecessors"
        if self.kind == "passed on rerun":
            return "flaky: failed, then passed when run again (--rerun-flaky)"
        if self.kind == "failed on rerun":
            return f"failed again on {self.runs} rerun(s): " + ", ".join(map(str, self.attempts))
        if self.kind == "collection order" and self.culprit:
            return (
                f"collection depends on order: its module imports only after"
                f" {'the module of ' if '::' in self.culprit else ''}{self.culprit}"
                f" ({self.error})"
            )
        if self.kind == "collection order":
            return f"collection depends on order: its module does not import alone ({self.error})"
        if self.kind == "inconclusive":
            how = "".join(f" ({a.how})" for a in self.attempts[-1:] if a.how)
            return f"recheck inconclusive: a rerun hung or crashed before the test reported{how}"
        how = "".join(f" ({a.how})" for a in self.attempts[-1:] if a.how)
        return f"fails alone too: not caused by other tests{how}"


def recheck(target: str, before: Sequence[str], run: Runner) -> Diagnosis:
    """Why `target` failed after `before` (its lane's earlier tests, in order)."""
    runs = 1
    try:
        alone = run([target])
    except CollectionFailed as exc:
        return _collection_culprit(target, before, run, str(exc))
    if alone.passed is None:
        return Diagnosis("inconclusive", runs=runs, attempts=(alone,))
    if not alone.passed:
        return Diagnosis("fails alone", runs=runs, attempts=(alone,))
    if not before:
        return Diagnosis("flaky", runs=runs)
    runs += 1
    after_all = run([*before, target])
    if after_all.passed is None:
        return Diagnosis("inconclusive", runs=runs, attempts=(after_all,))
    if after_all.passed:
        return Diagnosis("flaky", runs=runs)
    # Bisect for one test that makes it fail, keeping the order they ran in. A failure that
    # needs two earlier tests together is named by the whole set instead.
    suspects = list(before)
    while len(suspects) > 1 and runs < MAX_RUNS_PER_TEST:
        half = len(suspects) // 2
        first, second = suspects[:half], suspects[half:]
        runs += 1
        with_first = run([*first, target]).passed
        if with_first is None:
            break
        if not with_first:
            suspects = first
            continue
        runs += 1
        with_second = run([*second, target]).passed
        if with_second is None:
            break
        if with_second:
            return Diagnosis("order dependent", runs=runs)
        suspects = second
    if len(suspects) == 1:
        return Diagnosis("order dependent", culprit=suspects[0], runs=runs)
    return Diagnosis("order dependent", runs=runs)


def recheck_collection(
    module: str, candidates: Sequence[str], run: Runner, error: str
) -> Diagnosis:
    """A module that did not import in the run: the earlier module it needs, if any."""
    return _collection_culprit(module, [c for c in candidates if c != module], run, error)


def _collection_culprit(target: str, before: Sequence[str], run: Runner, error: str) -> Diagnosis:
    """Its module imports only when another was imported first: find the one predecessor
    whose module makes it import (the opposite search of a polluter)."""

    def collects(nodeids: Sequence[str]) -> bool:
        try:
            run(nodeids)
        except CollectionFailed:
            return False
        return True

    runs = 2
    if not before or not collects([*before, target]):
        return Diagnosis("collection order", runs=runs, error=error)
    suspects = list(before)
    while len(suspects) > 1 and runs < MAX_RUNS_PER_TEST:
        half = len(suspects) // 2
        runs += 1
        suspects = suspects[:half] if collects([*suspects[:half], target]) else suspects[half:]
    return Diagnosis("collection order", culprit=suspects[0], runs=runs, error=error)


def rerun(target: str, times: int, run: Runner) -> Diagnosis:
    """`--rerun-flaky N`: the target alone, up to N times; a pass makes it flaky. Else how
    each rerun ended (a test that hangs: timed out, each time)."""
    attempts: list[Attempt] = []
    for number in range(1, times + 1):
        try:
            attempt = run([target])
        except CollectionFailed as exc:
            attempt = Attempt(None, f"did not import: {exc}")
        if attempt.passed is True:
            return Diagnosis("passed on rerun", runs=number)
        attempts.append(attempt)
    return Diagnosis("failed on rerun", runs=times, attempts=tuple(attempts))


# Messages that show lanes meeting on one server: a suite creating and dropping databases of
# fixed names, which isolation = "database" cannot keep apart.
SHARED_SERVER_SIGNS = re.compile(
    r'database "[^"]+" (is being accessed by other users|already exists|does not exist)'
)


def shared_server_hint(messages: Sequence[str], shared: Sequence[str]) -> str | None:
    """A hint for the summary when failures look like lanes meeting on a server they share
    (`shared`: the services with a database per lane on one server)."""
    if not shared or not any(SHARED_SERVER_SIGNS.search(m) for m in messages):
        return None
    names = ", ".join(shared)
    return (
        f"some failures look like lanes meeting on one server ({names}: a database of a fixed"
        ' name created or dropped by the suite?); isolation = "server" gives every lane a'
        " server of its own"
    )


def auth_hint(messages: Sequence[str], refused: Mapping[str, re.Pattern[str]]) -> str | None:
    """A hint for the summary when failures look like a suite that connects without the
    credential its servers require (a hard-coded `localhost:6379`). `refused`: each service
    that requires one, with what its clients say when they do not give it."""
    names = [name for name, sign in refused.items() if any(sign.search(m) for m in messages)]
    if not names:
        return None
    keys = " or ".join(f"{TABLE}.services.{name}.auth = false" for name in names)
    return (
        f"some failures look like clients connecting to {', '.join(names)} without the run's"
        f" password or token; connect through the exported URL (it carries it), or set {keys}"
        " for a suite that cannot be told one"
    )


def export_hint(messages: Sequence[str], services: Mapping[str, ServiceSpec]) -> str | None:
    """A hint for the summary when failures look like a suite that connects the way its client
    library does by default (no URL, no host: libpq's socket or port 5432) while the run does
    not export that library's variables: the line that asks for them."""
    for name, (wanted, sign) in missed_exports(services).items():
        if not any(sign.search(m) for m in messages):
            continue
        spec, record = services[name], KINDS[services[name].kind]
        own = ", ".join(f"{var} = {json.dumps(value)}" for var, value in spec.export.items())
        line = f'export = ["{wanted}", {{ {own} }}]' if own else f'export = ["{wanted}"]'
        url = next(iter(record.exports_for(name)), None) if spec.export_defaults else None
        return (
            f"some failures look like clients connecting where their library looks by default,"
            f" and the run exports none of {', '.join(record.export_sets[wanted])}: add {line}"
            f" to [{TABLE}.services.{name}]" + (f" (or connect through {url})" if url else "")
        )
    return None


# In CI, `recheck = "auto"` rechecks when at most this many tests failed: more is rarely
# order dependence, and each recheck runs its tests again.
AUTO_MAX_FAILURES = 5
MAX_RECHECKED = 20


def wanted(mode: str, failures: int, ci: bool) -> bool:
    if failures == 0 or mode == "off":
        return False
    if mode == "on":
        return True
    return ci and failures <= AUTO_MAX_FAILURES


def apply(
    results: Sequence[TestResult],
    predecessors: Mapping[tuple[str, str], Sequence[str]],
    runner_for: Callable[[str], Runner],
    *,
    check: bool,
    reruns: int,
    say: Callable[[str], None],
    stopped: bool = False,
) -> list[TestResult]:
    """The results with verdicts on failed tests; with reruns, a failed test that passes on a
    rerun becomes passed and flaky. A runner that cannot run (services that cannot give one
    more lane) ends the rechecks with a notice; the results stay as they were."""
    updated = list(results)
    failing = [i for i, r in enumerate(updated) if r.failing]
    if stopped:
        reruns = 0  # a pass on rerun must not turn a run cut short by -x into a success
    if len(failing) > MAX_RECHECKED:
        verb = "rerunning" if reruns and not check else "rechecking"
        say(f"{verb} the first {MAX_RECHECKED} of {len(failing)} failed tests")
        failing = failing[:MAX_RECHECKED]
    for index in failing:
        result = updated[index]
        run = runner_for(result.python)
        found: list[str] = []
        try:
            if reruns:
                again = rerun(result.nodeid, reruns, run)
                if again.kind == "passed on rerun":
                    updated[index] = replace(
                        result, outcome="passed", flaky=True, verdict=again.text
                    )
                    continue
                found.append(again.text)
            if check:
                before = predecessors.get((result.python, result.nodeid), ())
                found.append(recheck(result.nodeid, before, run).text)
        except TestfleetError as exc:
            say(f"rechecks stopped: {exc.message}")
            break
        finally:
            # What was found before the rechecks stopped is kept.
            if found:
                updated[index] = replace(result, verdict="; ".join(found))
    return updated
