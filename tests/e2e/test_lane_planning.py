"""What a run plans, end to end: no more lanes than a selection has units, and a CI shard's
share in pytest's order with one lane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli, write_pyproject

pytestmark = pytest.mark.e2e

# Each lane that starts pytest leaves a file named after it.
RECORDS_LANES = (
    "import os, pathlib\n"
    "def pytest_configure(config):\n"
    "    folder = pathlib.Path(__file__).parent.parent / 'started'\n"
    "    folder.mkdir(exist_ok=True)\n"
    "    (folder / ('lane' + os.environ.get('TESTFLEET_LANE', '?'))).touch()\n"
)


def test_lanes_4_with_one_selected_file_starts_one_lane(tmp_path: Path, own_run_base: Path):
    """`lanes = 4` and one selected file: one lane starts (one unit to hand out), the run
    says why, and the summary shows it."""
    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\nlanes = 4\n")
    (root / "tests").mkdir()
    (root / "tests" / "conftest.py").write_text(RECORDS_LANES)
    for name in "ab":
        (root / "tests" / f"test_{name}.py").write_text(
            "def test_one(): pass\ndef test_two(): pass\n"
        )
    result = run_cli("run", "tests/test_a.py", cwd=root)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (root / "started").iterdir()) == ["lane1"]
    assert "1 lane(s) of 4: the selected tests are in 1 module(s)" in result.stderr
    assert "lane 1: 2 tests" in result.stderr
    assert "2 passed" in result.stderr
    assert list(own_run_base.iterdir()) == []


# Measured so that the split gives shard 2 of 2 the modules d, c and b, slowest first, while
# pytest collects them b, c, d; c passes only after b (in the same process).
MEASURED = {
    "tests/test_a.py::test_a": 10.0,
    "tests/test_b.py::test_b": 1.0,
    "tests/test_c.py::test_c": 2.0,
    "tests/test_d.py::test_d": 3.0,
}
ORDER_DEPENDENT = {
    "a": "def test_a(): pass\n",
    "b": "import os\ndef test_b(): os.environ['B_RAN'] = '1'\n",
    "c": "import os\ndef test_c(): assert os.environ.get('B_RAN'), 'b has not run'\n",
    "d": "def test_d(): pass\n",
}


def test_a_shard_with_one_lane_runs_in_pytests_order(tmp_path: Path, own_run_base: Path):
    """An order-dependent test that passes with `-n 1` passes in its shard with one lane."""
    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\n")
    (root / "tests").mkdir()
    for name, text in ORDER_DEPENDENT.items():
        (root / "tests" / f"test_{name}.py").write_text(text)
    (root / ".testfleet").mkdir()
    durations = {"version": 1, "durations": MEASURED}
    (root / ".testfleet" / "durations.json").write_text(json.dumps(durations))
    result = run_cli("run", "-n", "1", "--shard", "2/2", cwd=root)
    assert result.returncode == 0, result.stderr
    shard = json.loads((root / ".testfleet" / "shards" / "2-of-2" / "shard.json").read_text())
    assert shard["groups"][""]["selected"] == [
        "tests/test_b.py::test_b",
        "tests/test_c.py::test_c",
        "tests/test_d.py::test_d",
    ]
    assert "3 passed" in result.stderr
    assert "pytest's order" not in result.stderr  # no notice of a changed order
    assert list(own_run_base.iterdir()) == []
