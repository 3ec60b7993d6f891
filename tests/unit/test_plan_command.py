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
