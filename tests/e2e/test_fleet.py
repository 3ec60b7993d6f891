"""From one machine to the CI fleet, through the real CLI on a copy of the example project:
the Python matrix in uv-made environments, shards, and `testfleet merge`."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from testfleet.venvs import installed_pythons
from tests.helpers import EXAMPLE, run_cli

pytestmark = pytest.mark.e2e


def versions_here(count: int) -> list[str]:
    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split("."))

    found = {".".join(v.split(".")[:2]) for v in installed_pythons()}
    usable = sorted((v for v in found if key(v) >= (3, 10)), key=key, reverse=True)
    if len(usable) < count:
        pytest.skip(f"needs {count} Python versions >= 3.10 installed, found {usable}")
    return sorted(usable[:count], key=key)


@pytest.fixture
def bookshop(tmp_path: Path) -> Path:
    """The example, copied: its environments, reports and shards stay in the copy."""
    copy = tmp_path / "bookshop"
    shutil.copytree(
        EXAMPLE, copy, ignore=shutil.ignore_patterns(".testfleet", "*.egg-info", "__pycache__")
    )
    return copy


def junit_cases(path: Path) -> list[tuple[str, str, str, str]]:
    """(python, classname, name, outcome) of every test case, in file order."""
    import xml.etree.ElementTree as ET

    cases = []
    for suite in ET.parse(path).getroot().iter("testsuite"):
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        for case in suite.iter("testcase"):
            outcome = next((child.tag for child in case), "passed")
            cases.append(
                (
                    props["python"] or "",
                    case.get("classname", ""),
                    case.get("name", ""),
                    outcome,
                )
            )
    return cases


def test_matrix_runs_every_version_side_by_side(bookshop: Path):
    """Three versions on one stack, each in its own uv environment without testfleet in it:
    36 tests per version, one JUnit suite per version and lane, a summary row per version."""
    versions = versions_here(3)
    result = run_cli("run", "--python", ",".join(versions), "-n", "2", cwd=bookshop, timeout=600)
    assert result.returncode == 0, result.stderr
    cases = junit_cases(bookshop / ".testfleet" / "junit.xml")
    per_version = Counter(python.rsplit(".", 1)[0] for python, *_ in cases)
    assert dict(per_version) == dict.fromkeys(versions, 36)
    assert all(outcome == "passed" for *_, outcome in cases)
    for version in versions:
        env_python = bookshop / ".testfleet" / "envs" / version / "bin" / "python"
        probe = subprocess.run(
            [str(env_python), "-c", "import testfleet"], capture_output=True, check=False
        )
        assert probe.returncode != 0, f"testfleet was installed into the {version} environment"
        assert f"python {version}." in result.stderr  # a summary row per version
    again = run_cli("run", "--python", ",".join(versions), "-n", "2", cwd=bookshop, timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("is up to date (reused)") == 3


def run_shards(project: Path, count: int, *extra: str) -> None:
    for index in range(1, count + 1):
        result = run_cli("run", "--shard", f"{index}/{count}", "-n", "2", *extra, cwd=project)
        assert result.returncode == 0, result.stderr


def test_shards_then_merge_cover_every_test_exactly_once(bookshop: Path, tmp_path: Path):
    whole = run_cli("run", "-n", "2", cwd=bookshop)
    assert whole.returncode == 0, whole.stderr
    expected = sorted(junit_cases(bookshop / ".testfleet" / "junit.xml"))
    run_shards(bookshop, 3)
    shards = sorted(p.name for p in (bookshop / ".testfleet" / "shards").iterdir())
    assert shards == ["1-of-3", "2-of-3", "3-of-3"]
    page = tmp_path / "step-summary.md"
    merged = run_cli("merge", cwd=bookshop, env={"GITHUB_STEP_SUMMARY": str(page)})
    assert merged.returncode == 0, merged.stderr
    assert sorted(junit_cases(bookshop / ".testfleet" / "junit.xml")) == expected
    assert "36 passed" in page.read_text()
    shutil.move(bookshop / ".testfleet" / "shards" / "2-of-3", tmp_path / "away")
    missing = run_cli("merge", cwd=bookshop)
    assert missing.returncode == 2
    assert "shard 2-of-3 is missing" in missing.stderr


def test_merge_refuses_shards_that_do_not_fit(bookshop: Path):
    """A test claimed by two shards, a shard without its manifest, shards planned from other
    inputs: each is one line naming what is wrong."""
    run_shards(bookshop, 2)
    base = bookshop / ".testfleet" / "shards"
    first, second = base / "1-of-2" / "shard.json", base / "2-of-2" / "shard.json"
    original = second.read_text()
    manifest = json.loads(original)
    stolen = json.loads(first.read_text())["groups"][""]["selected"][0]
    manifest["groups"][""]["selected"].append(stolen)
    second.write_text(json.dumps(manifest))
    result = run_cli("merge", cwd=bookshop)
    assert result.returncode == 2
    assert f"{stolen} ran in two shards (1-of-2 and 2-of-2)" in result.stderr
    manifest = json.loads(original)
    manifest["fingerprint"] = "0" * 16
    second.write_text(json.dumps(manifest))
    result = run_cli("merge", cwd=bookshop)
    assert "were planned from different configs or durations" in result.stderr
    second.unlink()
    result = run_cli("merge", cwd=bookshop)
    assert "2-of-2 is not a complete shard directory" in result.stderr
    assert result.stderr.count("\n") == 1


def test_matrix_shards_do_not_clobber_each_other(bookshop: Path):
    """Jobs of two versions write different shard directories; merge joins all four."""
    versions = versions_here(2)
    for version in versions:
        run_shards(bookshop, 2, "--python", version)
    names = sorted(p.name for p in (bookshop / ".testfleet" / "shards").iterdir())
    assert names == sorted(f"{i}-of-2-py{v}" for v in versions for i in (1, 2))
    merged = run_cli("merge", cwd=bookshop)
    assert merged.returncode == 0, merged.stderr
    cases = junit_cases(bookshop / ".testfleet" / "junit.xml")
    assert len(cases) == 72
    assert len({(p.rsplit(".", 1)[0], c, n) for p, c, n, _ in cases}) == 72


def test_lane_limits_count_every_versions_lanes(tmp_path: Path):
    """Valkey DB numbers serve 16 lanes in all: 9 lanes on each of two versions is refused
    before anything starts, not found as "DB index is out of range" in lane 17."""
    from tests.helpers import write_pyproject

    versions = versions_here(2)
    write_pyproject(tmp_path, "[tool.testfleet.services.valkey]\nisolation = 'database'\n")
    result = run_cli("run", "--python", ",".join(versions), "-n", "9", cwd=tmp_path)
    assert result.returncode == 2
    assert "at most 16 lanes" in result.stderr
    assert "stack ready" not in result.stderr


def test_shards_split_alike_whatever_the_lanes_of_each_machine(bookshop: Path):
    """A 1-lane machine and a 2-lane machine compute the same split."""
    for index, lanes in ((1, "1"), (2, "2")):
        result = run_cli("run", "--shard", f"{index}/2", "-n", lanes, cwd=bookshop)
        assert result.returncode == 0, result.stderr
    merged = run_cli("merge", cwd=bookshop)
    assert merged.returncode == 0, merged.stderr


def test_plan_collects_in_the_versions_environment(bookshop: Path):
    """`plan` with a version collects in the uv-made environment, where testfleet is not
    installed (its plugin comes by PYTHONPATH)."""
    version = versions_here(1)[0]
    result = run_cli("plan", "--python", version, "-n", "2", cwd=bookshop, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("36 tests in ")
