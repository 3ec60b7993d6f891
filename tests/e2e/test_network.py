"""`network = "namespace"` end to end on examples/hardcoded: a suite that hard-codes
localhost:6379 and a fixed port for its own server passes in parallel lanes, and fails under
plain pytest-xdist on one network."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from testfleet.netns import unavailable
from tests.helpers import REPO, run_cli, start_cli, wait_for, wait_until_up, write_pyproject

HARDCODED = REPO / "examples" / "hardcoded"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


def test_hardcoded_suite_passes_in_four_lanes_with_namespaces(tmp_path: Path):
    junit = tmp_path / "junit.xml"
    result = run_cli("run", "-n", "4", "--junit-xml", str(junit), cwd=HARDCODED, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "16 passed" in result.stderr
    busy = re.findall(r"^lane \d+: ([1-9]\d*) tests", result.stderr, re.MULTILINE)
    assert len(busy) >= 3  # lanes really ran side by side, each on its own 6379 and 8765


def test_hardcoded_suite_fails_under_xdist_on_one_network(tmp_path: Path):
    """The proof: the same suite, `pytest -n 4` against one Valkey on localhost:6379 (a
    `testfleet up` on the shared network), fails: lanes flush each other's keys and meet on
    port 8765."""
    up = start_cli(HARDCODED, "up", "--network", "shared", "--dotenv", str(tmp_path / "env"))
    try:
        wait_until_up(up)
        shared = subprocess.run(
            [sys.executable, "-m", "pytest", "-n", "4", "-q", "-p", "no:cacheprovider"],
            cwd=HARDCODED,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
    assert shared.returncode == 1, shared.stdout
    assert " failed" in shared.stdout.splitlines()[-1]


def holders() -> list[psutil.Process]:
    """The processes holding lane namespaces (their program brings `lo` up by ioctl)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any("SIOCSIFFLAGS" in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def test_sigkill_of_testfleet_leaves_no_namespace(tmp_path: Path):
    write_pyproject(
        tmp_path,
        '[tool.testfleet]\nnetwork = "namespace"\ngroup-by = "test"\n'
        '[tool.testfleet.services.valkey]\nport = "default"\n',
    )
    (tmp_path / "test_hang.py").write_text(
        "import os, pathlib, time, pytest\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_hang(i):\n"
        "    pathlib.Path(f'started-{os.environ[\"TESTFLEET_LANE\"]}').touch()\n"
        "    time.sleep(120)\n"
    )
    before = {p.pid for p in holders()}
    run = start_cli(tmp_path, "run", "-n", "2")
    try:
        wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 2, timeout=60, what="lanes")
        ours = [p for p in holders() if p.pid not in before]
        assert len(ours) == 2
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=30)
        wait_for(lambda: not any(p.is_running() for p in ours), timeout=30, what="holders")
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()


def test_up_refuses_namespaces(tmp_path: Path):
    result = run_cli("up", cwd=HARDCODED, env={"TESTFLEET_NETWORK": "namespace"})
    assert result.returncode == 2
    assert "up would serve its stack inside a namespace" in result.stderr
