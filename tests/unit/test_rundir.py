"""Run directories: locked while their run lives, cleaned by the next run when it is gone."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from testfleet.errors import ConfigError
from testfleet.reaper import cleanup_stale
from testfleet.rundir import (
    MARK_VARIABLE,
    RunDir,
    default_base,
    disk_base,
    kill_recorded,
    process_start_ticks,
)
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


# -- a hostile local user ------------------------------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="planting another user's files needs root"
)
OTHER_UID = 65534  # nobody


def test_base_dir_is_created_private_and_traversable(tmp_path: Path):
    """The base is made by us with mode 711: others may enter (PostgreSQL's account) but not
    list or write it."""
    base = tmp_path / "base"
    run = RunDir.create(base)
    try:
        assert oct(base.stat().st_mode)[-3:] == "711"
        assert base.stat().st_uid == os.geteuid()
    finally:
        run.remove()


def test_symlinked_base_dir_is_refused(tmp_path: Path):
    """A base dir that is a link (to a target of the linker's choosing) is never used."""
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "base").symlink_to(target)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        RunDir.create(tmp_path / "base")
    assert list(target.iterdir()) == []


def test_group_writable_base_dir_is_refused(tmp_path: Path):
    base = tmp_path / "base"
    base.mkdir(mode=0o777)
    os.chmod(base, 0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        RunDir.create(base)


@needs_root
def test_base_dir_of_another_user_is_refused(tmp_path: Path):
    """`/dev/shm/testfleet-0` made by someone else first: refused, naming the fix."""
    base = tmp_path / "base"
    base.mkdir(mode=0o711)
    os.chown(base, OTHER_UID, OTHER_UID)
    with pytest.raises(ConfigError) as info:
        RunDir.create(base)
    assert f"owned by uid {OTHER_UID}" in info.value.message
    assert "rm -rf" in info.value.message
    assert info.value.exit_code == 2


@needs_root
def test_planted_stale_run_does_not_get_a_process_killed(tmp_path: Path):
    """A fake dead run whose records are not ours is ignored, whatever pid it names."""
    base = tmp_path / "base"
    run = RunDir.create(base)
    run.remove()
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        planted = base / "20200101-000000-abcdef"
        planted.mkdir()
        (planted / "run.lock").write_text("")
        ticks = process_start_ticks(victim.pid)
        (planted / "pids").write_text(f"{victim.pid} {ticks}\n")
        for path in (planted, planted / "run.lock", planted / "pids"):
            os.chown(path, OTHER_UID, OTHER_UID)
        assert cleanup_stale(base) == []
        assert victim.poll() is None
        assert planted.exists()
    finally:
        victim.kill()
        victim.wait()


def test_pid_record_that_is_a_link_is_not_believed(tmp_path: Path):
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        real = tmp_path / "elsewhere"
        real.write_text(f"{victim.pid} {process_start_ticks(victim.pid)}\n")
        (tmp_path / "pids").symlink_to(real)
        assert kill_recorded(tmp_path) == 0
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_escaped_process_is_found_by_its_mark(tmp_path: Path):
    """A process that left its group (setsid) but carries the run's mark is stopped too."""
    run = RunDir.create(tmp_path)
    env = {**os.environ, MARK_VARIABLE: run.mark}
    escaped = subprocess.Popen(["sleep", "300"], start_new_session=True, env=env)
    try:
        ticks = process_start_ticks(escaped.pid) or 0
        run.remove()
        escaped.wait(10)
        assert alive([(escaped.pid, ticks)]) == []
    finally:
        if escaped.poll() is None:
            escaped.kill()
            escaped.wait()


def test_kept_logs_outlive_the_run_and_are_pruned(tmp_path: Path):
    """A failed service's log is copied out of the run directory; only the newest are kept."""
    from testfleet.processes import KEPT_LOGS, Supervisor

    keep = tmp_path / "logs"
    run = RunDir.create(tmp_path / "base")
    try:
        supervisor = Supervisor(run, keep_dir=keep)
        for index in range(KEPT_LOGS + 3):
            log = run.path / f"server-{index}.log"
            process = supervisor.spawn(f"svc {index}", ["echo", f"line {index}"], log_path=log)
            process.popen.wait()
            kept = process.keep_log()
            os.utime(kept, (index, index))
            assert kept.parent == keep
            assert kept.read_text() == f"line {index}\n"
            assert oct(kept.stat().st_mode)[-3:] == "600"
        supervisor.stop_all()
    finally:
        run.remove()
    assert len(list(keep.iterdir())) == KEPT_LOGS


def test_debris_without_a_lock_is_removed_once_old(tmp_path: Path):
    """A directory left by a dead run's late writer (no lock, no records) goes; a fresh one,
    which may be a run being created right now, stays."""
    base = tmp_path / "base"
    RunDir.create(base).remove()
    old = base / "20200101-000000-aaaaaa"
    (old / "lanes" / "1").mkdir(parents=True)
    os.utime(old, (0, 0))
    fresh = base / "20990101-000000-bbbbbb"
    fresh.mkdir()
    assert cleanup_stale(base) == [old]
    assert not old.exists()
    assert fresh.exists()


# -- the base on disk ----------------------------------------------------------------------------


def test_the_disk_base_is_under_tmpdir_and_is_the_default_without_a_writable_shm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Where runs go when /dev/shm is small (space.py) or missing: $TMPDIR/testfleet-UID."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert disk_base() == tmp_path / f"testfleet-{os.getuid()}"
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert default_base() == disk_base()


@needs_root
def test_a_disk_base_planted_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """/tmp is writable by every user, like /dev/shm: the disk base gets the same checks."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = disk_base()
    planted.mkdir(mode=0o711)
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(ConfigError, match=f"owned by uid {OTHER_UID}"):
        RunDir.create(planted)
