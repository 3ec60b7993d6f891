"""Reruns (`--rerun-flaky`) and rechecks (`--recheck`) keep the run's limits: each rerun of a
test stops at `--test-timeout` as the lanes do, a hang there is that test failing (not a
recheck that says nothing), and the run's `--timeout` bounds the rechecks too."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import write_pyproject

pytestmark = pytest.mark.e2e

# Far under what the bugs took (about 200 s and 130 s): a bound on correctness, not speed.
BOUND_SECONDS = 60.0
# A test that hangs: every attempt leaves a line (its pid) behind, to count the attempts and
# check that none is left running.
HANGS = """
import os, pathlib, time

def hang(name):
    with open(pathlib.Path(__file__).with_name(name + ".attempts"), "a") as out:
        out.write(f"{os.getpid()}\\n")
    time.sleep(3600)
"""


@pytest.fixture
def run_base(own_run_base: Path) -> Iterator[Path]:
    """The test's own run-dir base (conftest.py); nothing may be left in it."""
    yield own_run_base
    left = list(own_run_base.iterdir())
    assert not left, f"runs left {left}"


def run_bounded(project: Path, base: Path, *args: str) -> tuple[int, str, float]:
    """`testfleet run ARGS`: its exit code, stderr and seconds; a run still going after
    BOUND_SECONDS is stopped (SIGTERM: its teardown runs) and fails the test."""
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "testfleet", "run", *args],
        cwd=project,
        env={**os.environ, "TESTFLEET_RUN_DIR": str(base), "CI": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=BOUND_SECONDS)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        pytest.fail(f"still running after {BOUND_SECONDS:g} s:\n{stderr}")
    return process.returncode, stderr, time.monotonic() - began


def results(project: Path) -> dict[str, dict[str, object]]:
    document = json.loads((project / ".testfleet" / "results.json").read_text())
    return {r["nodeid"]: r for r in document["results"]}


def attempts(project: Path, name: str) -> list[int]:
    """The pids of every attempt of the hanging test `name`; each must be gone."""
    pids = [int(line) for line in (project / f"{name}.attempts").read_text().split()]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"an attempt of {name} still runs ({pid})"
    return pids


def test_every_rerun_of_a_hanging_test_stops_at_the_test_timeout(tmp_path: Path, run_base: Path):
    """`--test-timeout 2 --rerun-flaky 3`: the lane's attempt and each of the three reruns
    are stopped at 2 s, and the result says so of every rerun."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    (tmp_path / "test_hang.py").write_text(HANGS + "\ndef test_hangs(): hang('hangs')\n")
    code, stderr, _ = run_bounded(tmp_path, run_base, "--test-timeout", "2", "--rerun-flaky", "3")
    assert code == 1, stderr
    result = results(tmp_path)["test_hang.py::test_hangs"]
    assert result["outcome"] == "failed"
    assert result["message"] == "timed out after 2 s"
    verdict = str(result["verdict"])
    assert verdict.startswith("failed again on 3 rerun(s): timed out after 2 s ("), verdict
    took = [float(s) for s in re.findall(r"timed out after 2 s \((\d+\.\d) s\)", verdict)]
    assert len(took) == 3, verdict
    assert all(2.0 <= s < 2.0 + 1.0 for s in took), verdict
    assert len(attempts(tmp_path, "hangs")) == 1 + 3


def test_a_recheck_that_hangs_is_a_failure_at_the_test_timeout(tmp_path: Path, run_base: Path):
    """`--recheck on --test-timeout 2`: a test that hangs only after another one passes alone
    and times out after it, so the other one is named; a test that always hangs times out
    alone too and fails alone."""
    write_pyproject(tmp_path, '[tool.testfleet]\norder = "pytest"\n')
    (tmp_path / "test_hang.py").write_text(
        HANGS
        + "\nSTATE = []\n"
        + "def test_leaves_state(): STATE.append(1)\n"
        + "def test_hangs_after_it():\n    if STATE: hang('after')\n"
        + "def test_hangs_always(): hang('always')\n"
    )
    code, stderr, _ = run_bounded(tmp_path, run_base, "--test-timeout", "2", "--recheck", "on")
    assert code == 1, stderr
    found = results(tmp_path)
    after = found["test_hang.py::test_hangs_after_it"]
    assert after["message"] == "timed out after 2 s"
    assert after["verdict"] == (
        "order dependent: passes alone, fails after test_hang.py::test_leaves_state"
    )
    always = found["test_hang.py::test_hangs_always"]
    assert always["verdict"] == ("fails alone too: not caused by other tests (timed out after 2 s)")
    # The lane's attempt, and the recheck after its predecessor (alone it passed).
    assert len(attempts(tmp_path, "after")) == 2
    assert len(attempts(tmp_path, "always")) == 2  # the lane's, and alone


def test_the_run_timeout_bounds_the_rechecks(tmp_path: Path, run_base: Path):
    """A module that does not import, rechecked in lanes whose start hangs: `--timeout 20`
    stops the rechecks at the run's timeout, and the run's own findings stand."""
    write_pyproject(
        tmp_path, '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n[tool.testfleet]\n'
    )
    (tmp_path / "tests").mkdir()
    # Only a recheck's pytest hangs as it starts (its reporter's file is set).
    (tmp_path / "tests" / "conftest.py").write_text(
        "import os, time\nif os.environ.get('TESTFLEET_RECHECK_FILE'):\n    time.sleep(3600)\n"
    )
    (tmp_path / "tests" / "test_a.py").write_text("def test_a(): pass\n")
    (tmp_path / "tests" / "test_b.py").write_text("import no_such_module\n")
    code, stderr, took = run_bounded(tmp_path, run_base, "--timeout", "20", "--recheck", "on")
    assert code == 1, stderr
    assert "rechecking the collection of tests/test_b.py" in stderr
    assert "rechecks stopped: the run's timeout came" in stderr
    assert "error: collecting tests/test_b.py failed" in stderr
    assert took < 20 + 15, stderr
