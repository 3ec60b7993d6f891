"""Naming the test that breaks another, with a fake runner standing in for fresh lanes."""

from __future__ import annotations

from collections.abc import Sequence

from testfleet.recheck.culprit import Attempt, apply, recheck, rerun, shared_server_hint
from testfleet.results import TestResult

BEFORE = [f"t.py::test_{i}" for i in range(10)]
PASSED, FAILED, SAID_NOTHING = Attempt(True), Attempt(False), Attempt(None)


def polluted_by(culprits: set[str], target: str = "t.py::target"):
    """A runner where `target` fails whenever all of `culprits` ran before it."""
    calls: list[list[str]] = []

    def run(nodeids: Sequence[str]) -> Attempt:
        calls.append(list(nodeids))
        assert nodeids[-1] == target
        return Attempt(not culprits <= set(nodeids[:-1]))

    return run, calls


def test_the_one_polluter_is_named():
    run, calls = polluted_by({"t.py::test_6"})
    verdict = recheck("t.py::target", BEFORE, run)
    assert verdict.culprit == "t.py::test_6"
    assert verdict.text == "order dependent: passes alone, fails after t.py::test_6"
    assert calls[0] == ["t.py::target"]  # alone first
    assert len(calls) <= 2 + 2 * 4  # alone, all before, then a bisection
    for call in calls:  # the order the lane ran them in is kept
        assert call[:-1] == sorted(call[:-1], key=BEFORE.index)


def test_a_failure_alone_is_not_blamed_on_others():
    verdict = recheck("t.py::target", BEFORE, lambda ids: FAILED)
    assert verdict.kind == "fails alone"
    assert verdict.culprit is None
    assert verdict.text == "fails alone too: not caused by other tests"


def test_a_test_that_times_out_alone_fails_alone_and_says_how():
    hung = Attempt(False, "timed out after 2 s", 2.01)
    verdict = recheck("t.py::target", BEFORE, lambda ids: hung)
    assert verdict.text == "fails alone too: not caused by other tests (timed out after 2 s)"


def test_not_reproduced_is_flaky():
    verdict = recheck("t.py::target", BEFORE, lambda ids: PASSED)
    assert verdict.text == "flaky: passed on re-run alone and after its predecessors"


def test_two_polluters_together_are_reported_without_a_single_name():
    run, _ = polluted_by({"t.py::test_1", "t.py::test_8"})
    verdict = recheck("t.py::target", BEFORE, run)
    assert verdict.kind == "order dependent"
    assert verdict.culprit is None


def test_rerun_counts_a_later_pass_as_flaky():
    outcomes = iter([FAILED, PASSED])
    verdict = rerun("t.py::target", 3, lambda ids: next(outcomes))
    assert verdict.kind == "passed on rerun"
    assert verdict.runs == 2


def test_reruns_that_all_fail_say_how_each_ended():
    """Each rerun's end is in the verdict: a test that hangs timed out every time."""
    outcomes = iter([Attempt(False, "timed out after 2 s", 2.04), FAILED, SAID_NOTHING])
    verdict = rerun("t.py::target", 3, lambda ids: next(outcomes))
    assert verdict.kind == "failed on rerun"
    assert verdict.text == (
        "failed again on 3 rerun(s): timed out after 2 s (2.0 s), failed, said nothing"
    )


def test_shared_server_failures_get_a_hint():
    hint = shared_server_hint(['database "app" is being accessed by other users'], ["postgres"])
    assert hint is not None
    assert 'isolation = "server"' in hint
    assert "postgres" in hint
    assert shared_server_hint(["assert 1 == 2"], ["postgres"]) is None
    assert shared_server_hint(['database "app" already exists'], []) is None


def test_a_rerun_that_hangs_is_no_evidence():
    """A rerun that ran out of time says nothing about the test: no culprit is guessed."""
    answers = iter([PASSED, Attempt(None, "t.py::test_3 timed out after 2 s before it")])
    verdict = recheck("t.py::target", BEFORE, lambda ids: next(answers))
    assert verdict.kind == "inconclusive"
    assert verdict.culprit is None
    assert verdict.text.endswith("(t.py::test_3 timed out after 2 s before it)")


def test_no_flaky_pass_for_a_run_cut_short():
    """With -x the rest never ran: a rerun pass must not make the run a success."""
    failed = [TestResult("t.py::target", "failed"), TestResult("t.py::other", "not run")]
    updated = apply(
        failed, {}, lambda group: lambda ids: PASSED, check=False, reruns=2, say=print, stopped=True
    )
    assert updated[0].outcome == "failed"


def test_recheck_keeps_options_but_not_what_selects_tests(tmp_path):
    from testfleet.project import Project, validate
    from testfleet.recheck.lanes import recheck_args

    (tmp_path / "tests").mkdir()
    project = Project(tmp_path, validate({}))
    args = [
        "-q",
        "--lf",
        "tests",
        "tests/test_a.py::test_x",
        "--deselect",
        "t::y",
        "-x",
        "-k",
        "db",
    ]
    assert recheck_args(project, args) == ["-q", "-k", "db"]


def test_a_module_that_imports_only_after_another_is_named():
    """Alone its module does not import; after its lane's earlier tests it does: the test
    whose module must come first is named."""
    from testfleet.recheck.culprit import CollectionFailed

    def run(nodeids: Sequence[str]) -> Attempt:
        if "t.py::test_3" not in nodeids[:-1]:
            raise CollectionFailed("ImportError: cannot import name 'registry'")
        return PASSED

    verdict = recheck("u.py::target", BEFORE, run)
    assert verdict.kind == "collection order"
    assert verdict.culprit == "t.py::test_3"
    assert "imports only after the module of t.py::test_3" in verdict.text
    assert "cannot import name 'registry'" in verdict.text


def test_reruns_announce_themselves_as_reruns():
    """`--rerun-flaky N` says it reruns the failed tests N times; only `--recheck` rechecks."""
    from testfleet.recheck.lanes import announcement

    assert announcement(2, reruns=3, check=False) == (
        "rerunning 2 failed test(s) in fresh lanes, up to 3 time(s) each"
    )
    assert announcement(2, reruns=3, check=True).endswith(", then rechecking what still fails")
    assert announcement(2, reruns=0, check=True) == "rechecking 2 failed test(s) in fresh lanes"


def test_reruns_of_many_failures_say_they_rerun_the_first_ones():
    """Past the cap, reruns alone still say they rerun, not recheck."""
    failed = [TestResult(f"t.py::test_{i}", "failed") for i in range(25)]
    said: list[str] = []
    apply(failed, {}, lambda group: lambda ids: FAILED, check=False, reruns=1, say=said.append)
    assert said == ["rerunning the first 20 of 25 failed tests"]
