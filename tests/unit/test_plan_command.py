"""`testfleet plan` in-process: the split a run would make, and with `--shard I/M` only that
shard's share of it (nothing is started: the suite is collected without services)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testfleet.cli import main
from testfleet.plan import estimate, make_units, shard_units
from tests.helpers import write_pyproject

MODULES = {f"tests/test_{name}.py": 3 for name in "abcdef"}


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """Six modules of three tests each; no services."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    for relative, count in MODULES.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"def test_{i}(): pass\n" for i in range(count)))
    return tmp_path


def planned(capsys: pytest.CaptureFixture[str], suite: Path, *args: str) -> tuple[str, list[str]]:
    """The plan's first line and the units (modules) it lists, in its order."""
    assert main(["-C", str(suite), "plan", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    units = [m.group(1) for line in out if (m := re.search(r"s  (\S+) \(\d+ tests\)$", line))]
    return out[0], units


def test_plan_of_a_shard_lists_only_that_shards_units(
    suite: Path, capsys: pytest.CaptureFixture[str]
):
    """Shards 1/2 and 2/2 split the units between them, each once, as `run --shard` does."""
    head_one, one = planned(capsys, suite, "--shard", "1/2")
    head_two, two = planned(capsys, suite, "--shard", "2/2")
    _, everything = planned(capsys, suite)
    assert one
    assert two
    assert set(one).isdisjoint(two)
    assert sorted(one + two) == sorted(everything) == sorted(MODULES)
    assert head_one.startswith(f"shard 1/2: {3 * len(one)} of 18 tests")
    assert head_two.startswith(f"shard 2/2: {3 * len(two)} of 18 tests")
    # The very split run --shard computes from the same collection.
    nodeids = [f"{m}::test_{i}" for m in sorted(MODULES) for i in range(3)]
    units = make_units(nodeids, estimate(nodeids, {}), "module")
    assert sorted(one) == sorted(u.key for u in shard_units(units, 1, 2))


def test_plan_of_no_tests_says_so_without_an_estimate(
    tmp_path: Path, own_run_base: Path, capsys: pytest.CaptureFixture[str]
):
    """A suite with no tests, or a shard whose share is empty, is said plainly: no lanes and
    no per-test estimate of tests that are not there."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_none.py").write_text("def helper(): pass\n")
    assert main(["-C", str(tmp_path), "plan"]) == 0
    out = capsys.readouterr().out
    assert out == (
        "0 tests: pytest collected no test to run, so there is nothing to split and no estimate\n"
    )
    (tmp_path / "tests" / "test_one.py").write_text("def test_one(): pass\n")
    assert main(["-C", str(tmp_path), "plan", "--shard", "2/2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("shard 2/2: 0 of 1 tests: the other shards run them all")
    assert "estimated" not in out


READS_THE_CACHE = """
def pytest_sessionstart(session):
    # As suites keep state across runs: pytest's cache, read before collection.
    seen = session.config.cache.get("example/seen", 0)
    session.config.cache.set("example/seen", seen + 1)
"""


def test_plan_collects_with_pytests_cache_as_lanes_do(
    suite: Path, own_run_base: Path, capsys: pytest.CaptureFixture[str]
):
    """A conftest that reads `config.cache` at session start collects under plan as in a
    lane: the cache is on, in a directory of plan's own (the project's is never written)."""
    (suite / "tests" / "conftest.py").write_text(READS_THE_CACHE)
    head, units = planned(capsys, suite)
    assert head.startswith("18 tests in 6 units")
    assert sorted(units) == sorted(MODULES)
    assert not (suite / ".pytest_cache").exists()


def failed_plan(capsys: pytest.CaptureFixture[str], suite: Path) -> tuple[str, str]:
    """Plan's one-line error and the pytest lines under it."""
    assert main(["-C", str(suite), "plan"]) == 2
    first, _, rest = capsys.readouterr().err.partition("\n")
    return first, rest


def test_a_module_that_does_not_import_is_named_with_its_error(
    suite: Path, own_run_base: Path, capsys: pytest.CaptureFixture[str]
):
    """The module and pytest's own error line, not a guess about services."""
    (suite / "tests" / "test_b.py").write_text("import not_installed_anywhere\n")
    first, rest = failed_plan(capsys, suite)
    assert first.startswith("testfleet: error: collecting the tests failed (pytest exit code 2):")
    assert "tests/test_b.py: ModuleNotFoundError: No module named 'not_installed_anywhere'" in first
    assert "service" not in first
    assert "E   ModuleNotFoundError: No module named 'not_installed_anywhere'" in rest


def test_an_error_at_session_start_is_named(
    suite: Path, own_run_base: Path, capsys: pytest.CaptureFixture[str]
):
    """An error raised by a conftest hook before collection (pytest's INTERNALERROR): its
    exception line, without pytest's margin."""
    (suite / "tests" / "conftest.py").write_text(
        "def pytest_sessionstart(session):\n    raise RuntimeError('no fixtures file')\n"
    )
    first, rest = failed_plan(capsys, suite)
    assert first.endswith(
        "(pytest exit code 3): RuntimeError: no fixtures file; fix it, then plan again"
        " (pytest's lines below)"
    )
    assert "INTERNALERROR> RuntimeError: no fixtures file" in rest


def test_a_connection_refused_at_import_names_the_missing_services(
    suite: Path, own_run_base: Path, capsys: pytest.CaptureFixture[str]
):
    """Only an error that looks like a failed connection is put down to plan starting no
    services, with the fix: connect in a fixture."""
    (suite / "tests" / "test_b.py").write_text(
        "import socket\nsocket.create_connection(('127.0.0.1', 1), timeout=5)\n"
    )
    first, _ = failed_plan(capsys, suite)
    assert "tests/test_b.py: ConnectionRefusedError:" in first
    assert first.endswith(
        "`testfleet plan` starts no services, so code that connects while pytest collects"
        " fails here: connect in a fixture instead"
    )
