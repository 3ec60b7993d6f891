"""`testfleet up` lives until Ctrl-C or SIGTERM and leaves nothing behind, even when killed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from testfleet.rundir import process_start_ticks
from tests.helpers import alive, recorded_pids, wait_for, write_pyproject

pytestmark = pytest.mark.e2e

STACK = """
[tool.testfleet.services.postgres]
[tool.testfleet.services.valkey]
[tool.testfleet.services.nats]
[tool.testfleet.services.vault]
"""


@pytest.fixture(autouse=True)
def base(own_run_base: Path) -> Path:
    """Every testfleet here runs under the test's own base (TESTFLEET_RUN_DIR), and the test
    looks only there: a developer's `up` or a second copy of the suite is none of its business."""
    return own_run_base


class Up:
    """A running `testfleet up` whose env and run directory we have read."""

    def __init__(self, project: Path, *, ignore_sigint: bool = False) -> None:
        def ignore() -> None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.process = subprocess.Popen(
            [sys.executable, "-m", "testfleet", "up"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=ignore if ignore_sigint else None,  # noqa: PLW1509
        )
        assert self.process.stderr is not None
        assert self.process.stdout is not None
        self.log: list[str] = []
        while True:
            line = self.process.stderr.readline()
            assert line, "up ended early: " + "".join(self.log)
            self.log.append(line)
            if "Ctrl-C stops the stack" in line:
                break
        run_id = re.search(r"run (\S+)\)?$", "".join(self.log).split("ready in")[1].splitlines()[0])
        assert run_id
        self.run_dir = Path(os.environ["TESTFLEET_RUN_DIR"]) / run_id.group(1).rstrip(")")
        self.env = {}
        for _ in range(50):
            line = self.process.stdout.readline()
            if not line.startswith("export "):
                break
            key, _, value = line[len("export ") :].strip().partition("=")
            self.env[key] = value.strip("'")
            if key == "TESTFLEET_SERVICES":
                break
        self.pids = recorded_pids(self.run_dir)

    def finish(self, signum: int | None = None) -> int:
        """Send `signum` (if any), wait for the exit, keep the rest of stderr, close pipes."""
        if signum is not None:
            os.kill(self.process.pid, signum)
        code = self.process.wait(30)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.log.append(self.process.stderr.read())
        self.process.stdout.close()
        self.process.stderr.close()
        return code


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_pyproject(tmp_path, STACK)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_up_serves_then_stops_cleanly(project: Path, signum: int, code: int):
    up = Up(project)
    # postgres, and a valkey, nats and vault server for the developer's lane and (made in
    # the background) for the lane kept warm for runs.
    wait_for(lambda: len(alive(recorded_pids(up.run_dir))) == 7, what="the warm lane")
    up.pids = recorded_pids(up.run_dir)
    dotenv = project / ".testfleet" / "env"
    descriptor = project / ".testfleet" / ".env.up.json"
    assert oct(descriptor.stat().st_mode)[-3:] == "600"
    assert oct(dotenv.stat().st_mode)[-3:] == "600"
    with psycopg.connect(up.env["POSTGRES_URL"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert up.finish(signum) == code
    assert alive(up.pids) == []
    assert not up.run_dir.exists()
    assert not dotenv.exists()
    assert not descriptor.exists()


def test_sigkill_leaves_nothing_running(project: Path):
    """Killed with SIGKILL, testfleet cannot tear down: its reaper stops the servers."""
    up = Up(project)
    wait_for(lambda: len(alive(recorded_pids(up.run_dir))) == 7, what="the warm lane")
    up.pids = recorded_pids(up.run_dir)
    up.finish(signal.SIGKILL)
    wait_for(lambda: alive(up.pids) == [], what="servers to exit after SIGKILL")
    wait_for(lambda: not up.run_dir.exists(), what="run directory removal")
    # Runs would otherwise find a stack that is gone.
    descriptor = project / ".testfleet" / ".env.up.json"
    wait_for(lambda: not descriptor.exists(), what="the up's descriptor removal")


def test_two_concurrent_stacks(project: Path, tmp_path_factory: pytest.TempPathFactory):
    other = write_pyproject(tmp_path_factory.mktemp("other"), STACK)
    first, second = Up(project), Up(other)
    try:
        assert first.env["POSTGRES_URL"] != second.env["POSTGRES_URL"]
        one = redis.Redis.from_url(first.env["VALKEY_URL"])
        two = redis.Redis.from_url(second.env["VALKEY_URL"])
        one.set("owner", "first")
        assert two.get("owner") is None
        one.close()
        two.close()
    finally:
        assert first.finish(signal.SIGINT) == 130
        assert second.finish(signal.SIGINT) == 130
    assert alive(first.pids + second.pids) == []


def test_server_dying_ends_up_with_exit_3(project: Path):
    up = Up(project)
    valkey = [pid for pid, _ in up.pids if "valkey" in Path(f"/proc/{pid}/cmdline").read_text()]
    os.kill(valkey[0], signal.SIGKILL)
    assert up.finish() == 3
    assert "service valkey (lane 1) exited unexpectedly (killed by SIGKILL)" in up.log[-1]
    assert alive(up.pids) == []


def test_up_started_with_sigint_ignored_still_stops_on_sigint(project: Path):
    """Shells start background jobs with SIGINT ignored; `kill -INT` must still stop `up`."""
    up = Up(project, ignore_sigint=True)
    assert up.finish(signal.SIGINT) == 130
    assert alive(up.pids) == []


def test_interrupted_run_stops_pytest_and_what_it_forked(tmp_path: Path, own_run_base: Path):
    """Ctrl-C during `testfleet run`: pytest's whole process group goes, then the stack."""
    project = write_pyproject(tmp_path, "[tool.testfleet.services.valkey]\n")
    (project / "test_hang.py").write_text(
        "import os, subprocess, time\n"
        "def test_hang():\n"
        "    child = subprocess.Popen(['sleep', '300'])\n"
        "    open('pids.txt', 'w').write(f'{os.getpid()} {child.pid}')\n"
        "    time.sleep(300)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "testfleet", "run", "--", "-p", "no:cacheprovider"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids_file = project / "pids.txt"
    wait_for(
        lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2,
        what="the test to start",
    )
    test_pids = [
        (pid, process_start_ticks(pid) or 0) for pid in map(int, pids_file.read_text().split())
    ]
    assert len(alive(test_pids)) == 2
    run_dirs = [p for p in own_run_base.iterdir() if (p / "pids").exists()]
    servers = [pid for d in run_dirs for pid in recorded_pids(d)]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted; everything started was stopped" in stderr
    assert alive(test_pids) == []
    assert servers
    assert alive(servers) == []
