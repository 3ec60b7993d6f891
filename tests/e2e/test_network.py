"""`network = "namespace"` end to end on examples/hardcoded: a suite that hard-codes
localhost:6379 and a fixed port for its own server passes in parallel lanes, and fails under
plain pytest-xdist on one network."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testfleet.netns import unavailable
from tests.helpers import (
    REPO,
    machine_lock,
    run_cli,
    start_cli,
    wait_for,
    wait_until_up,
    write_pyproject,
)

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
    with machine_lock("hardcoded-ports"):  # localhost:6379 and 8765, on the host's network
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


def holders_in(folder: Path) -> list[psutil.Process]:
    """The holders started by a run in `folder` (they keep the directory it ran in)."""
    found = []
    for process in holders():
        with contextlib.suppress(psutil.Error):
            if Path(process.cwd()).is_relative_to(folder):
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
        # Its own: another copy of the suite may be making holders at the same time.
        mine = {p.pid for p in psutil.Process(run.pid).children(recursive=True)}
        ours = [p for p in holders() if p.pid not in before and p.pid in mine]
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


@pytest.fixture(scope="module")
def unprivileged_venv() -> Iterator[Path]:
    """A venv another user can run: the system's Python (pyenv's lives under /root), with
    testfleet from this checkout and the example's needs. Installed, not editable: a checkout
    under /root (mode 700, the CI container's case) is closed to the other user."""
    system_python = Path("/usr/bin/python3")
    if os.geteuid() != 0 or not system_python.exists() or shutil.which("runuser") is None:
        pytest.skip("needs root (to act as another user), runuser and /usr/bin/python3")
    folder = Path(tempfile.mkdtemp(prefix="testfleet-user-venv-"))
    venv = folder / "venv"
    subprocess.run([str(system_python), "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{REPO}[valkey]", "redis"],
        check=True,
        timeout=600,
    )
    subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
    yield venv
    shutil.rmtree(folder, ignore_errors=True)


def test_another_user_gets_namespaces_through_a_user_namespace(unprivileged_venv: Path):
    """Not root: testfleet runs itself again in a user namespace of its own (same uid), makes
    the lanes' namespaces there, and the hard-coded suite passes in four lanes."""
    user = "nobody"
    project = Path(tempfile.mkdtemp(prefix="testfleet-user-project-"))
    try:
        shutil.copytree(
            HARDCODED, project, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".testfleet")
        )
        subprocess.run(["chown", "-R", user, str(project)], check=True)
        result = subprocess.run(
            [
                "runuser",
                "-u",
                user,
                "--",
                str(unprivileged_venv / "bin" / "python"),
                "-m",
                "testfleet",
                "run",
                "-n",
                "4",
            ],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if "does not let user" in result.stderr:
            pytest.skip(result.stderr.strip().splitlines()[-1])
        assert result.returncode == 0, result.stderr
        assert "16 passed" in result.stderr
        # Its own (started in the project): another copy of the suite may hold namespaces,
        # also as that user, meanwhile.
        assert holders_in(project) == []
    finally:
        shutil.rmtree(project, ignore_errors=True)
