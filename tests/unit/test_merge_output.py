"""`testfleet merge` in-process on shard directories made from plain data: every shard's
coverage, measured in other checkouts, combined here; the total on a line GitLab's regex
reads; the threshold applied to the whole."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from coverage import CoverageData

from testfleet import shards
from testfleet.ci.gitlab import COVERAGE_REGEX
from testfleet.cli import main
from testfleet.lanes.outcome import GroupOutcome, RunOutcome
from testfleet.reports.coverage import CoverageOutcome
from testfleet.results import TestResult
from tests.helpers import project, write_pyproject

IDS = ["tests/test_a.py::test_one", "tests/test_b.py::test_two"]
APP = "x = 1\ny = 2\nz = 3\nw = 4\n"  # four statements


@pytest.fixture(autouse=True)
def no_rcfile_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COVERAGE_RCFILE", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def gitlab_total(output: str) -> str | None:
    """What GitLab takes as the job's coverage: the regex's group on the last line it matches
    (GitLab scans the log from its end)."""
    pattern = re.compile(COVERAGE_REGEX.strip("/"), re.MULTILINE)
    found = pattern.findall(output)
    return found[-1] if found else None


def outcome(selected: list[str]) -> RunOutcome:
    results = tuple(TestResult(n, "passed", 0.1) for n in selected)
    group = GroupOutcome("", tuple(IDS), tuple(selected), results, {}, 0, 0.0)
    return RunOutcome((group,), (), False, False, None, None, "", 0, ())


def shard_in_checkout(checkout: Path, index: int, lines: list[int] | None, into: Path) -> Path:
    """Shard `index` of 2 as a CI machine with the project cloned at `checkout` writes it (its
    coverage data names files there), gathered into `into`; then the checkout is gone, as
    that machine is."""
    write_pyproject(checkout, "[tool.testfleet]\n")
    (checkout / "app.py").write_text(APP)
    lane_data = None
    if lines is not None:
        lane_data = checkout / "lanes"
        lane_data.mkdir()
        data = CoverageData(basename=str(lane_data / ".coverage.lane1"))
        data.add_lines({str(checkout / "app.py"): lines})
        data.write()
    folder = shards.write_shard(
        project(checkout, {}),
        (index, 2),
        outcome([IDS[index - 1]]),
        {"": "3.11.7"},
        measured={},
        keep_order=False,
        coverage_dir=lane_data,
    )
    target = into / ".testfleet" / "shards" / folder.name
    shutil.copytree(folder, target)
    shutil.rmtree(checkout)
    return target


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """The merge job's own checkout, at yet another path."""
    root = write_pyproject(tmp_path / "builds" / "x", "[tool.testfleet]\n")
    (root / "app.py").write_text(APP)
    return root


def merge(root: Path, *args: str) -> int:
    return main(["-C", str(root), "merge", *args])


def test_merge_prints_the_total_that_gitlab_reads(
    tmp_path: Path, here: Path, capsys: pytest.CaptureFixture[str]
):
    """Shards measured in two other checkouts: their data is mapped to this one (app.py,
    lines 1-3 of 4), the XML names the file relative to here, and the last line GitLab's
    `coverage:` regex matches carries the combined total."""
    shard_in_checkout(tmp_path / "home" / "runner" / "work" / "x" / "x", 1, [1, 2], here)
    shard_in_checkout(tmp_path / "other" / "x", 2, [3], here)
    assert merge(here) == 0
    err = capsys.readouterr().err
    assert "TOTAL coverage: 75.00%" in err.splitlines()
    assert gitlab_total(err) == "75.00"
    xml = (here / ".testfleet" / "coverage.xml").read_text()
    assert re.findall(r'filename="([^"]+)"', xml) == ["app.py"]
    assert "left out" not in err


def test_merge_applies_coverage_fail_under_to_the_whole(
    tmp_path: Path, here: Path, capsys: pytest.CaptureFixture[str]
):
    """Each shard alone is at 50% or 25%; the whole, 75%, passes 70 and fails 80, and the
    failure says so."""
    shard_in_checkout(tmp_path / "a", 1, [1, 2], here)
    shard_in_checkout(tmp_path / "b", 2, [3], here)
    assert merge(here, "--coverage-fail-under", "70") == 0
    capsys.readouterr()
    assert merge(here, "--coverage-fail-under", "80") == 1
    assert (
        "testfleet: error: total coverage 75.00% is under coverage-fail-under 80%"
        in capsys.readouterr().err
    )


def test_merge_refuses_shards_measured_differently(
    tmp_path: Path, here: Path, capsys: pytest.CaptureFixture[str]
):
    """One shard with --coverage and one without: the total would miss a share."""
    shard_in_checkout(tmp_path / "a", 1, [1, 2], here)
    shard_in_checkout(tmp_path / "b", 2, None, here)
    assert merge(here) == 2
    err = capsys.readouterr().err
    assert "shard 1-of-2 measured coverage and 2-of-2 did not" in err
    assert len(err.splitlines()) == 1


def test_merge_with_a_threshold_and_no_coverage_fails(
    tmp_path: Path, here: Path, capsys: pytest.CaptureFixture[str]
):
    """coverage-fail-under given to merge of shards that measured nothing cannot pass."""
    shard_in_checkout(tmp_path / "a", 1, None, here)
    shard_in_checkout(tmp_path / "b", 2, None, here)
    assert merge(here, "--coverage-fail-under", "50") == 1
    assert "no coverage data was recorded" in capsys.readouterr().err
    assert merge(here) == 0


def test_a_shards_partial_total_matches_no_ci_regex():
    """A shard's own total is information: GitLab must not take it for the job's (were
    `coverage:` set on shard jobs too), and it says that merge applies the threshold."""
    partial = CoverageOutcome(52.3, "", None, Path(".c"), 90.0, partial=True)
    assert gitlab_total(partial.total_line) is None
    assert "merge` combines every shard's and applies coverage-fail-under 90%" in (
        partial.total_line
    )
    assert not partial.below
    whole = CoverageOutcome(97.256, "", Path("c.xml"), Path(".c"), 90.0)
    assert gitlab_total(whole.total_line) == "97.26"
