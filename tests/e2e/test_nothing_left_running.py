"""Nothing outlives a run: lanes after `kill -9`, setup and readiness commands, daemons that
tests start, PostgreSQL's shared memory. Each test checks the process table itself."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from testfleet.rundir import process_start_ticks
from tests.helpers import alive, run_cli, start_cli, wait_for, wait_until_up, write_pyproject

pytestmark = pytest.mark.e2e


def pids_in(path: Path) -> list[tuple[int, int]]:
    return [(pid, process_start_ticks(pid) or 0) for pid in map(int, path.read_text().split())]


@pytest.fixture(autouse=True)
def base(own_run_base: Path) -> Path:
    """Every testfleet here runs under the test's own base, and the test looks only there."""
    return own_run_base


def run_dirs(base: Path) -> set[Path]:
    return set(base.iterdir()) if base.is_dir() else set()


def test_kill_9_of_run_stops_its_lanes(tmp_path: Path, base: Path):
    """Lanes are supervised like servers: the reaper stops them when testfleet is SIGKILLed,
    and nothing recreates the deleted run directory."""
    project = write_pyproject(tmp_path, "[tool.testfleet]\n")
    (project / "tests").mkdir()
    for name in ("a", "b"):
        (project / "tests" / f"test_{name}.py").write_text(
            "import os, time\n"
            "def test_hang():\n"
            f"    open('lane-{name}.pid', 'w').write(str(os.getpid()))\n"
            "    time.sleep(300)\n"
            # A lane asks for more work before its last test: a second test keeps the other
            # module for the other lane.
            "def test_after(): pass\n"
        )
    before = run_dirs(base)
    process = start_cli(project, "run", "-n", "2")
    wait_for(
        lambda: (
            all((project / f"lane-{n}.pid").exists() for n in "ab")
            and all((project / f"lane-{n}.pid").read_text() for n in "ab")
        ),
        what="both lanes to start their test",
    )
    lanes = pids_in(project / "lane-a.pid") + pids_in(project / "lane-b.pid")
    assert len(alive(lanes)) == 2
    process.kill()
    process.communicate(timeout=30)
    wait_for(lambda: alive(lanes) == [], what="lanes to be stopped by the reaper")
    wait_for(lambda: run_dirs(base) <= before, what="the run directory to go")
    time.sleep(0.3)  # nothing may come back: a lane that lived on would recreate its dir
    assert run_dirs(base) <= before


def test_sigterm_during_setup_stops_the_setup_command(tmp_path: Path):
    project = write_pyproject(
        tmp_path,
        # The sleep is the setup shell's child, as a migration tool's worker would be; a
        # second service makes the stack start on threads.
        '[tool.testfleet.services.postgres]\nsetup = "sleep 45 & echo $! > setup.pid; wait"\n'
        "[tool.testfleet.services.valkey]\n",
    )
    (project / "test_x.py").write_text("def test_x(): pass\n")
    process = start_cli(project, "run")
    pid_file = project / "setup.pid"
    wait_for(lambda: pid_file.exists() and bool(pid_file.read_text().strip()), what="setup")
    setup = pids_in(pid_file)
    assert len(alive(setup)) == 1
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert alive(setup) == []


def test_ready_command_is_held_to_the_start_timeout(tmp_path: Path):
    """A readiness command that never exits is killed at the start-timeout, not later."""
    project = write_pyproject(
        tmp_path,
        "[tool.testfleet.services.api]\n"
        "kind = 'command'\n"
        "command = 'sleep 300'\n"
        "start-timeout = 2\n"
        "ready = { command = 'echo $$ >> ready.pids; exec sleep 40' }\n",
    )
    began = time.monotonic()
    result = run_cli("up", cwd=project, timeout=60)
    took = time.monotonic() - began
    assert result.returncode == 3, result.stderr
    assert "not ready after 2 s" in result.stderr
    assert took < 8, f"start-timeout 2 s took {took:.1f} s to fire"
    assert alive(pids_in(project / "ready.pids")) == []


@pytest.mark.parametrize("how", ["setsid -f", "env -i setsid -f"])
def test_daemons_started_by_tests_are_stopped(tmp_path: Path, how: str):
    """A test that daemonizes a process (own session, even with a cleared environment) does
    not leave it running after the run."""
    project = write_pyproject(tmp_path, "[tool.testfleet]\n")
    (project / "test_daemon.py").write_text(
        "import subprocess\n"
        "def test_daemon():\n"
        f"    subprocess.run({how.split()!r} + ['sh', '-c', 'echo $$ > daemon.pid;"
        " exec sleep 300'], check=True)\n"
        "    import time\n"
        "    for _ in range(200):\n"
        "        try:\n"
        "            if open('daemon.pid').read().strip(): break\n"
        "        except OSError: pass\n"
        "        time.sleep(0.01)\n"
    )
    result = run_cli("run", cwd=project)
    assert result.returncode == 0, result.stderr
    daemon = int((project / "daemon.pid").read_text())
    wait_for(
        lambda: (
            alive([(daemon, process_start_ticks(daemon) or 0)]) == []
            if process_start_ticks(daemon)
            else True
        ),
        timeout=5,
        what="the daemon to be gone",
    )


def test_killed_postgres_leaves_no_shared_memory(tmp_path: Path, base: Path):
    project = write_pyproject(tmp_path, "[tool.testfleet.services.postgres]\n")
    before = set(Path("/dev/shm").glob("PostgreSQL.*"))
    up = start_cli(project, "up")
    wait_until_up(up)
    run_dir = next(p for p in run_dirs(base) if (p / "postgres").exists())
    up.kill()
    up.communicate(timeout=30)
    wait_for(lambda: not run_dir.exists(), what="the reaper to clean up")
    assert set(Path("/dev/shm").glob("PostgreSQL.*")) - before == set()


def test_run_files_are_private(tmp_path: Path):
    """No other local user can read a log, a config or a secret of the run; the dev server's
    root token is not in its log at all."""
    project = write_pyproject(
        tmp_path,
        '[tool.testfleet]\nenv = { RUN_DIR = "{run_dir}" }\n'
        "[tool.testfleet.services.vault]\n[tool.testfleet.services.valkey]\npassword = true\n",
    )
    (project / "test_files.py").write_text(
        "import os, stat\n"
        "from pathlib import Path\n"
        "def test_walk():\n"
        "    run = Path(os.environ['RUN_DIR'])\n"
        "    token = os.environ['VAULT_TOKEN']\n"
        "    seen = []\n"
        "    for folder, dirs, files in os.walk(run):\n"
        "        for name in dirs + files:\n"
        "            path = Path(folder) / name\n"
        "            mode = path.lstat().st_mode\n"
        # Sockets and links have no permissions of their own: their directories do.
        "            if stat.S_ISSOCK(mode) or stat.S_ISLNK(mode): continue\n"
        "            seen.append(path)\n"
        "            if stat.S_ISDIR(mode):\n"
        "                assert not mode & (stat.S_IROTH | stat.S_IWOTH), path\n"
        "            else:\n"
        "                assert not mode & (stat.S_IROTH | stat.S_IRGRP), path\n"
        "            if name == 'server.log':\n"
        "                assert token not in path.read_text(errors='replace'), path\n"
        "    assert any(p.name == 'server.log' and 'vault' in str(p) for p in seen)\n"
    )
    result = run_cli("run", "--", "-p", "no:cacheprovider", cwd=project)
    assert result.returncode == 0, result.stderr
