"""`testfleet merge` in-process on shard directories that were altered, cut or corrupted
after their jobs wrote them: every result is checked against its own shard's manifest, every
file's shape is checked, and each problem is one line naming the file and the fix, exit 2,
never an internal error or a green merge."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testfleet import shard_merge, shards
from testfleet.cli import main
from testfleet.lanes.outcome import GroupOutcome, RunOutcome
from testfleet.options import OPTIONS
from testfleet.results import TestResult
from tests.helpers import project, write_pyproject

A1, A2 = "tests/test_a.py::test_one", "tests/test_a.py::test_two"
B1, B2 = "tests/test_b.py::test_one", "tests/test_b.py::test_fails"
IDS = [A1, A2, B1, B2]
SHARES = {1: [A1, A2], 2: [B1, B2]}
GHOST = "tests/test_z.py::test_ghost"


@pytest.fixture(autouse=True)
def nothing_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell's TESTFLEET_* variables and CI page are not read; nothing is started."""
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("COVERAGE_RCFILE", raising=False)

    def refused(self: object, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"the CLI started a process: {args}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refused)


def result(nodeid: str, python: str = "") -> TestResult:
    if nodeid == B2:
        return TestResult(nodeid, "failed", 0.2, lane=0, message="assert 1 == 2", python=python)
    return TestResult(nodeid, "passed", 0.1, lane=0, python=python)


def outcome(selected: list[str], labels: tuple[str, ...] = ("",)) -> RunOutcome:
    groups = tuple(
        GroupOutcome(
            label, tuple(IDS), tuple(selected), tuple(result(n, label) for n in selected), {}, 0, 0
        )
        for label in labels
    )
    return RunOutcome(groups, (), False, False, None, None, "", 0, ())


def write(root: Path, index: int, count: int = 2, labels: tuple[str, ...] = ("",)) -> Path:
    share = IDS if count == 1 else SHARES[index]
    return shards.write_shard(
        project(root, {}),
        (index, count),
        shards.label(outcome(share, labels), (index, count)),
        {label: f"{label or '3.11'}.7" for label in labels},
        measured={},
        keep_order=False,
        coverage_dir=None,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project with both shards of a 2-way split: shard 2 holds the failing test."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    write(tmp_path, 1)
    write(tmp_path, 2)
    return tmp_path


def shard(root: Path, name: str) -> Path:
    return root / ".testfleet" / "shards" / name


def edit(path: Path, change: Callable[[Any], None]) -> None:
    """Rewrite a JSON file with `change` applied to its data in place (`wrapped` puts the
    whole document in a list)."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps([data] if data.pop("wrap me", False) else data))


def without(key: str) -> Callable[[Any], None]:
    def change(data: dict[str, Any]) -> None:
        del data[key]

    return change


def wrapped(data: dict[str, Any]) -> None:
    """The document in a list: a file of the wrong shape."""
    data["wrap me"] = True


def merge(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["-C", str(root), "merge"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "internal error" not in err, err
    return code, err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("testfleet: error: "), err
    return lines[0].removeprefix("testfleet: error: ")


def test_untouched_shards_merge_with_their_failure(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The baseline the tamperings below change: four cases, one failed, exit 1."""
    code, _ = merge(root, capsys)
    assert code == 1
    junit = (root / ".testfleet" / "junit.xml").read_text()
    assert junit.count("<testcase ") == 4
    assert junit.count("<failure") == 1


def results_of(root: Path, name: str) -> Path:
    return shard(root, name) / "results.json"


def duplicate(root: Path) -> None:
    edit(results_of(root, "1-of-2"), lambda d: d["results"].append(d["results"][0]))


def drop_passing(root: Path) -> None:
    edit(results_of(root, "1-of-2"), lambda d: d.update(results=d["results"][:1]))


def add_extra(root: Path) -> None:
    def extra(data: dict[str, Any]) -> None:
        data["results"].append(dict(data["results"][0], nodeid=GHOST))

    edit(results_of(root, "1-of-2"), extra)


def drop_failure(root: Path) -> None:
    def drop(data: dict[str, Any]) -> None:
        data["results"] = [r for r in data["results"] if r["outcome"] != "failed"]

    edit(results_of(root, "2-of-2"), drop)


def move_result(root: Path) -> None:
    moved = json.loads(results_of(root, "1-of-2").read_text())["results"][0]
    edit(results_of(root, "1-of-2"), lambda d: d.update(results=d["results"][1:]))
    edit(results_of(root, "2-of-2"), lambda d: d["results"].append(moved))


def other_python(root: Path) -> None:
    def relabel(data: dict[str, Any]) -> None:
        data["results"][0]["python"] = "3.12"

    edit(results_of(root, "1-of-2"), relabel)


def ghost_selected(root: Path) -> None:
    """A test added to a shard's share (and its result) that no shard collected."""
    edit(shard(root, "1-of-2") / "shard.json", lambda d: d["groups"][""]["selected"].append(GHOST))
    add_extra(root)


RESULT_TAMPERING = {
    "duplicated": (duplicate, f"has two results for {A1}"),
    "missing": (drop_passing, f"has no result for {A2}, which shard.json says this shard ran"),
    "extra": (add_extra, f"has a result for {GHOST}, which is not one of this shard's tests"),
    "dropped-failure": (
        drop_failure,
        f"has no result for {B2}, which shard.json says this shard ran",
    ),
    "moved": (move_result, f"has a result for {A1}, which is shard 1-of-2's test"),
    "other-python": (other_python, f"has a result for {A1} on python 3.12, which"),
    "ghost-selected": (ghost_selected, f"selects {GHOST}, which it did not collect"),
}


@pytest.mark.parametrize("case", RESULT_TAMPERING, ids=list(RESULT_TAMPERING))
def test_results_that_do_not_match_the_manifest_are_refused(
    root: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A result duplicated, missing, extra, dropped with its failure, moved to another
    shard or relabelled: one line naming the shard, the test and the fix; exit 2."""
    tamper, expected = RESULT_TAMPERING[case]
    tamper(root)
    code, err = merge(root, capsys)
    line = one_line(err)
    assert code == 2, line
    assert expected in line
    assert line.endswith(f"; {shard_merge.REDO}")


def test_a_shard_cut_short_reports_its_missing_results_as_not_run(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shard that says it was cut short accounts for results it lacks: they are merged as
    not run, and the merge fails on the shard's problem rather than on a broken artifact."""
    edit(shard(root, "2-of-2") / "shard.json", lambda d: d.update(problems=["the run timed out"]))
    drop_failure(root)
    code, err = merge(root, capsys)
    assert code == 1
    assert "shard 2-of-2: the run timed out; its tests that did not run" in err
    junit = (root / ".testfleet" / "junit.xml").read_text()
    assert junit.count("<testcase ") == 4
    assert "not run: the run timed out" in junit


def manifest_of(root: Path, name: str = "2-of-2") -> Path:
    return shard(root, name) / "shard.json"


MANIFESTS: dict[str, tuple[Callable[[Any], None], str]] = {
    "a-list": (wrapped, "not an object"),
    "shard-word": (lambda d: d.update(shard="two"), "'shard' is 'two'"),
    "shard-bool": (lambda d: d.update(shard=True), "'shard' is True"),
    "no-groups": (without("groups"), "has no 'groups'"),
    "empty-groups": (lambda d: d.update(groups={}), "'groups' is empty"),
    "group-a-list": (lambda d: d.update(groups={"": []}), "group '' is not an object"),
    "selected-number": (
        lambda d: d["groups"][""].update(selected=[1]),
        "'selected' of group '' is not a list of test ids",
    ),
    "no-fingerprint": (without("fingerprint"), "has no 'fingerprint'"),
    "problems-text": (lambda d: d.update(problems="oops"), "'problems' is 'oops'"),
    "selected-twice": (
        lambda d: d["groups"][""]["selected"].append(B1),
        f"'selected' of group '' lists {B1} twice",
    ),
    "3-of-2": (lambda d: d.update(shard=3), "shard 3 of 2 is not a shard"),
    "0-of-2": (lambda d: d.update(shard=0), "shard 0 of 2 is not a shard"),
    "negative": (lambda d: d.update(shard=-1), "shard -1 of 2 is not a shard"),
    "of-100000": (lambda d: d.update(shards=100000), "is not a shard"),
}


@pytest.mark.parametrize("case", MANIFESTS, ids=list(MANIFESTS))
def test_a_malformed_manifest_is_one_line(
    root: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest of the wrong shape, types or range: one line naming the file, exit 2."""
    change, expected = MANIFESTS[case]
    edit(manifest_of(root), change)
    code, err = merge(root, capsys)
    line = one_line(err)
    assert code == 2, line
    assert f"{manifest_of(root)}: " in line
    assert expected in line


def test_a_third_shard_of_two_is_refused(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A `3-of-2` directory with an empty share fits every cross-shard check but is no
    shard of a 2-way split."""
    third = shard(root, "3-of-2")
    shutil.copytree(shard(root, "2-of-2"), third)
    edit(third / "shard.json", lambda d: d.update(shard=3) or d["groups"][""].update(selected=[]))
    edit(third / "results.json", lambda d: d.update(results=[]))
    edit(third / "durations.json", lambda d: d.update(durations={}))
    code, err = merge(root, capsys)
    line = one_line(err)
    assert code == 2, line
    assert f"{third / 'shard.json'}: shard 3 of 2 is not a shard" in line


def test_a_zero_of_zero_shard_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A lone `0-of-0` shard with every test passes every cross-shard check but names no
    shard."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    folder = write(tmp_path, 1, count=1)
    edit(folder / "shard.json", lambda d: d.update(shard=0, shards=0))
    code, err = merge(tmp_path, capsys)
    line = one_line(err)
    assert code == 2, line
    assert "shard 0 of 0 is not a shard" in line


RESULTS_FILES: dict[str, tuple[Callable[[Any], None], str]] = {
    "nan-duration": (
        lambda d: d["results"][0].update(duration=math.nan),
        "'duration' of a result is nan",
    ),
    "negative-duration": (
        lambda d: d["results"][0].update(duration=-1),
        "'duration' of a result is -1",
    ),
    "no-nodeid": (lambda d: without("nodeid")(d["results"][0]), "a result has no 'nodeid'"),
    "results-object": (lambda d: d.update(results={}), "'results' is not a list"),
}


@pytest.mark.parametrize("case", RESULTS_FILES, ids=list(RESULTS_FILES))
def test_a_malformed_results_file_is_one_line(
    root: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    change, expected = RESULTS_FILES[case]
    edit(results_of(root, "1-of-2"), change)
    code, err = merge(root, capsys)
    line = one_line(err)
    assert code == 2, line
    assert f"{results_of(root, '1-of-2')}: not a readable testfleet results file" in line
    assert expected in line
    assert line.endswith(f"; {shard_merge.REDO}")


def durations_of(root: Path, name: str = "1-of-2") -> Path:
    return shard(root, name) / "durations.json"


SHARD_DURATIONS: dict[str, tuple[Callable[[Any], None], str]] = {
    "nan": (lambda d: d["durations"].update({A1: math.nan}), f"the duration of {A1}, nan, is"),
    "infinite": (lambda d: d["durations"].update({A1: math.inf}), f"the duration of {A1}, inf, is"),
    "negative": (lambda d: d["durations"].update({A1: -3.0}), f"the duration of {A1}, -3.0, is"),
    "1e308": (lambda d: d["durations"].update({A1: 1e308}), f"the duration of {A1}, 1e+308, is"),
    "word": (lambda d: d["durations"].update({A1: "fast"}), f"the duration of {A1}, 'fast', is"),
    "a-list": (wrapped, "not an object"),
    "durations-list": (lambda d: d.update(durations=[]), "'durations' is not an object"),
    "not-its-test": (
        lambda d: d["durations"].update({B1: 1.0}),
        f"{B1} is not one of this shard's tests",
    ),
}


@pytest.mark.parametrize("case", SHARD_DURATIONS, ids=list(SHARD_DURATIONS))
def test_a_shards_poisoned_durations_are_refused(
    root: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN, infinite, negative, absurd or non-numeric durations in a shard's durations.json,
    or a file of the wrong shape: one line naming the file, exit 2, and the project's
    durations file is left as it was (not written with NaN)."""
    change, expected = SHARD_DURATIONS[case]
    edit(durations_of(root), change)
    code, err = merge(root, capsys)
    line = one_line(err)
    assert code == 2, line
    assert f"{durations_of(root)}: " in line
    assert expected in line
    assert not (root / ".testfleet" / "durations.json").exists()


def test_a_shards_unreadable_durations_file_is_refused(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated durations.json was silently skipped: its measurements were lost."""
    durations_of(root).write_text('{"version": 1, "durations": {')
    code, err = merge(root, capsys)
    line = one_line(err)
    assert code == 2, line
    assert f"{durations_of(root)}: not a readable shard durations file" in line


def strict_json(path: Path) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} has {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_merge_cleans_a_poisoned_project_durations_file(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The project's durations file with NaN, negative, infinite and absurd entries: merge
    leaves them out with a note and writes a file of finite, plausible numbers only."""
    store = root / ".testfleet" / "durations.json"
    store.write_text(
        '{"version": 1, "durations": {"x::nan": NaN, "x::neg": -1, "x::inf": Infinity,'
        ' "x::huge": 1e308, "x::ok": 2.5}}'
    )
    code, err = merge(root, capsys)
    assert code == 1, err
    assert f"testfleet: {store}: left out 4 unusable duration(s)" in err
    written = strict_json(store)["durations"]
    assert written == {"x::ok": 2.5, A1: 0.1, A2: 0.1, B1: 0.1, B2: 0.2}


def test_merge_refuses_a_project_durations_file_of_the_wrong_shape(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A durations setting pointing at some other JSON file: refused before anything is
    written, rather than overwritten."""
    store = root / ".testfleet" / "durations.json"
    store.write_text("[1, 2, 3]\n")
    code, err = merge(root, capsys)
    line = one_line(err)
    assert code == 2, line
    assert line.startswith(f"{store}: not a durations file")
    assert store.read_text() == "[1, 2, 3]\n"
    assert not (root / ".testfleet" / "junit.xml").exists()


@pytest.mark.parametrize("value", ["3/2", "0/0", "0/2", "-1/2", "1/0", "1/257"])
@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_shard_out_of_range_is_refused_at_the_cli(
    tmp_path: Path, value: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--shard 3/2` or `0/0`: one line naming the flag and what is accepted, before anything
    is collected or started."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    assert main(["-C", str(tmp_path), command, f"--shard={value}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "argument --shard: must be I/M with 1 <= I <= M <= 256, such as 2/4" in line


def test_a_shard_out_of_range_is_refused_from_the_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    monkeypatch.setenv("TESTFLEET_SHARD", "3/2")
    assert main(["-C", str(tmp_path), "run"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "TESTFLEET_SHARD='3/2': must be I/M with 1 <= I <= M <= 256" in line


def test_matrix_results_are_checked_per_python(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With two Pythons in one shard directory each result belongs to its own Python's
    share: the same test's result twice on 3.11 and none on 3.12 is refused."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    labels = ("3.11", "3.12")
    write(tmp_path, 1, labels=labels)
    write(tmp_path, 2, labels=labels)

    def relabel(data: dict[str, Any]) -> None:
        first = next(r for r in data["results"] if r["python"] == "3.12")
        first["python"] = "3.11"

    edit(results_of(tmp_path, "1-of-2-py3.11+3.12"), relabel)
    code, err = merge(tmp_path, capsys)
    line = one_line(err)
    assert code == 2, line
    assert f"has two results for {A1} on python 3.11" in line
