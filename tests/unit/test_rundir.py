"""Run directories: locked while their run lives, cleaned by the next run when it is gone."""

import os
import subprocess
import sys
from pathlib import Path

from testfleet.rundir import RunDir, cleanup_stale, kill_recorded
from tests.helpers import alive, recorded_pids


def test_live_run_is_kept(tmp_path: Path):
    run = RunDir.create(tmp_path)
    assert cleanup_stale(tmp_path) == []
    assert run.path.exists()
    run.remove()
    assert not run.path.exists()


def test_dead_runs_directory_and_processes_are_removed(tmp_path: Path):
    """A run whose owner died (lock released) loses its processes and directory."""
    script = (
        "import subprocess, sys, os\n"
        "from pathlib import Path\n"
        "from testfleet.rundir import RunDir\n"
        "run = RunDir.create(Path(sys.argv[1]))\n"
        "p = subprocess.Popen(['sleep', '300'], start_new_session=True,\n"
        "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "run.record(p.pid)\n"
        "print(run.path, flush=True)\n"
        "os._exit(0)\n"  # dies without teardown, like a SIGKILL
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    run_path = Path(out.stdout.strip())
    pids = recorded_pids(run_path)
    assert alive(pids)
    assert cleanup_stale(tmp_path) == [run_path]
    assert not run_path.exists()
    assert alive(pids) == []


def test_recorded_pid_reused_by_another_process_is_spared(tmp_path: Path):
    """Only a process with the recorded start time is killed, never a later one with its pid."""
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (tmp_path / "pids").write_text(f"{victim.pid} 1\n")  # wrong start time
        assert kill_recorded(tmp_path) == 0
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_run_ids_differ(tmp_path: Path):
    first, second = RunDir.create(tmp_path), RunDir.create(tmp_path)
    try:
        assert first.run_id != second.run_id
        assert oct(first.path.stat().st_mode)[-3:] == "711"
    finally:
        first.remove()
        second.remove()
        assert os.listdir(tmp_path) == []
