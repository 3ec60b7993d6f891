"""Coverage and failures where CI shows them, through the real CLI: the example measured with
no coverage settings (its API server too), shards run in two other checkouts and merged in a
third with the threshold applied to the whole, and GitHub annotations of a failing test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import pytest

from testfleet.ci.gitlab import COVERAGE_REGEX
from testfleet.options import OPTIONS
from testfleet.rundir import marked_processes
from tests.helpers import EXAMPLE, write_pyproject

pytestmark = pytest.mark.e2e

CI_VARIABLES = (
    "CI",
    "GITHUB_ACTIONS",
    "GITHUB_WORKSPACE",
    "GITHUB_STEP_SUMMARY",
    "COVERAGE_RCFILE",
)


@pytest.fixture
def run_base(own_run_base: Path) -> Path:
    """The test's own run-dir base (conftest.py): it looks only at the runs it started."""
    return own_run_base


def cli(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as CI runs it, without this shell's TESTFLEET_* options or CI variables."""
    skipped = {option.env for option in OPTIONS} | set(CI_VARIABLES)
    environ = {k: v for k, v in os.environ.items() if k not in skipped}
    return subprocess.run(
        [sys.executable, "-m", "testfleet", *args],
        cwd=cwd,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run(cwd: Path, base: Path, *args: str) -> str:
    """`testfleet run ARGS`, which passes, in its own run-dir base; its stderr. Nothing of it
    may be left running."""
    result = cli(cwd, "run", "--run-dir", str(base), *args)
    assert result.returncode == 0, result.stderr
    runs = re.findall(r"; run (\d{8}-\d{6}-[0-9a-f]+)$", result.stderr, re.MULTILINE)
    assert runs, result.stderr
    assert [pid for r in runs for pid in marked_processes(str(base / r))] == []
    return result.stderr


def copy_of_example(where: Path) -> Path:
    """The example, copied into a checkout directory of its own."""
    copy = where / "bookshop"
    shutil.copytree(
        EXAMPLE, copy, ignore=shutil.ignore_patterns(".testfleet", "*.egg-info", "__pycache__")
    )
    return copy


def percent(pattern: str, text: str) -> float:
    found = re.search(pattern, text, re.MULTILINE)
    assert found, text
    return float(found[1])


def gitlab_total(output: str) -> float | None:
    """The job coverage GitLab reads: the last line its regex matches."""
    found = re.findall(COVERAGE_REGEX.strip("/"), output, re.MULTILINE)
    return float(found[-1]) if found else None


def line_hits(xml: Path, filename: str) -> dict[int, int]:
    """Cobertura XML: line number -> hits, of one file."""
    for cls in ET.parse(xml).getroot().iter("class"):
        if cls.get("filename") == filename:
            return {
                int(line.get("number", "0")): int(line.get("hits", "0"))
                for line in cls.iter("line")
            }
    raise AssertionError(f"{filename} is not in {xml}")


def test_coverage_of_shards_in_other_checkouts_is_the_whole_runs(tmp_path: Path, run_base: Path):
    """The example has no coverage settings: `run --coverage` passes and measures its API
    server (`python -m bookshop.api`, a command service) too. Shards 1/2 and 2/2, run in two
    other clone directories with a threshold just under the whole run's total, both pass
    though each alone is far under it; merged in a third checkout after the other two are
    gone, coverage.xml names the project's files relative to it, the total is within 1% of
    the whole run's and is what GitLab reads, and a threshold above it fails the merge."""
    whole = copy_of_example(tmp_path / "whole")
    said = run(whole, run_base, "-n", "2", "--coverage")
    assert "36 passed" in said
    total = percent(r"^TOTAL coverage: ([\d.]+)%$", said)
    assert 90 < total < 100
    api = line_hits(whole / ".testfleet" / "coverage.xml", "bookshop/api.py")
    source = (whole / "bookshop" / "api.py").read_text().splitlines()
    # A line only the server runs, when a test posts an order to it.
    (ordering,) = [n for n, text in enumerate(source, 1) if "catalog.place_order" in text]
    assert api[ordering] > 0, "the API server was not measured"

    threshold = round(total - 0.5, 2)
    gathered = copy_of_example(tmp_path / "merge")
    for index in (1, 2):
        checkout = copy_of_example(tmp_path / f"machine{index}")
        shard = ["--shard", f"{index}/2", "-n", "2", "--coverage"]
        said = run(checkout, run_base, *shard, "--coverage-fail-under", str(threshold))
        assert "18 passed" in said
        alone = percent(r"^coverage of this shard alone: ([\d.]+)% \(partial", said)
        assert alone < threshold  # applied here, it would have failed the shard
        assert gitlab_total(said) is None
        name = f"{index}-of-2"
        shutil.copytree(
            checkout / ".testfleet" / "shards" / name, gathered / ".testfleet" / "shards" / name
        )
        shutil.rmtree(checkout)

    merged = cli(gathered, "merge", "--coverage-fail-under", str(threshold))
    assert merged.returncode == 0, merged.stderr
    combined = percent(r"^TOTAL coverage: ([\d.]+)%$", merged.stderr)
    assert abs(combined - total) <= 1.0
    assert gitlab_total(merged.stderr) == combined
    xml = gathered / ".testfleet" / "coverage.xml"
    names = {cls.get("filename", "") for cls in ET.parse(xml).getroot().iter("class")}
    assert {"bookshop/api.py", "bookshop/catalog.py", "tests/conftest.py"} <= names
    assert all(not n.startswith(("/", "..")) for n in names), names

    above = min(100.0, round(combined + 0.5, 2))
    failing = cli(gathered, "merge", "--coverage-fail-under", str(above))
    assert failing.returncode == 1, failing.stderr
    assert f"total coverage {combined:.2f}% is under coverage-fail-under {above:g}%" in (
        failing.stderr
    )


FAILING = """\
def test_passes():
    pass


def test_fails():
    assert 1 == 2
"""


def test_a_failing_test_is_annotated_on_github_actions(tmp_path: Path, run_base: Path):
    """With GITHUB_ACTIONS=true a failing test prints one `::error` line naming its file
    (from the repository's root, $GITHUB_WORKSPACE) and the failing line; a shard's run
    writes its own part of the step summary, named."""
    repo = tmp_path / "repo"
    project = write_pyproject(repo / "proj", "[tool.testfleet]\n")
    (project / "tests").mkdir()
    (project / "tests" / "test_a.py").write_text(FAILING)
    page = tmp_path / "summary.md"
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(repo),
        "GITHUB_STEP_SUMMARY": str(page),
    }
    for shard in ([], ["--shard", "1/1"]):
        result = cli(project, "run", "--run-dir", str(run_base), "-n", "2", *shard, env=github)
        assert result.returncode == 1, result.stderr
        assert result.stdout.splitlines() == [
            "::error file=proj/tests/test_a.py,line=6,title=tests/test_a.py%3A%3Atest_fails"
            "::failed: assert 1 == 2"
        ]
    titles = re.findall(r"^## (.*)$", page.read_text(), re.MULTILINE)
    assert len(titles) == 2
    assert titles[0].startswith("testfleet: Python 3.")
    assert titles[1].startswith("testfleet: shard 1/1, Python 3.")
    assert page.read_text().count("### Failures (1)") == 2
    # Outside GitHub Actions nothing is printed for it.
    plain = cli(project, "run", "--run-dir", str(run_base), "-n", "2")
    assert plain.returncode == 1
    assert "::error" not in plain.stdout + plain.stderr
