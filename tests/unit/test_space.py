"""Room for run data: the estimate from lanes and services, where the run directory goes when
/dev/shm is small (pure, over fake free space), and a full filesystem as one line."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from testfleet import space
from testfleet.cli import main
from testfleet.commands import common
from testfleet.errors import ConfigError, ServiceError
from testfleet.kinds import KINDS
from testfleet.project import load_project
from testfleet.space import MB, estimate, place
from testfleet.up.identity import identity
from tests.helpers import EXAMPLE, project

SHM = Path("/dev/shm/testfleet-0")
DISK = Path("/tmp/testfleet-0")


def free_space(**by_root: int | None) -> Any:
    """A fake statvfs: the free bytes of the first root (`shm`, `tmp`, `mnt`) a path is under."""
    roots = {Path(f"/{name}" if name != "shm" else "/dev/shm"): n for name, n in by_root.items()}

    def free(path: Path) -> int | None:
        return next((n for root, n in roots.items() if path.is_relative_to(root)), None)

    return free


# -- the estimate -----------------------------------------------------------------------------


def test_every_kind_has_a_footprint():
    """A new kind cannot be forgotten by the estimate."""
    assert set(space.FOOTPRINTS) == set(KINDS)


def test_the_example_is_estimated_above_its_measured_peak():
    """examples/bookshop with 4 lanes peaked at 78.5 MB on tmpfs; the estimate covers that
    without asking for twice as much."""
    config = load_project(EXAMPLE, cli={}, environ={}).config
    need = estimate(config.services.values(), 4)
    assert 78.5 * MB < need < 2 * 78.5 * MB
    # One lane peaked at 55.5 MB: a container's 64 MB /dev/shm is too tight for a real suite.
    assert estimate(config.services.values(), 1) > 64 * MB


def test_postgres_with_a_server_per_lane_counts_the_template_and_every_copy(tmp_path: Path):
    """isolation = "server": the stopped template server stays beside every lane's copy."""
    table = {"services": {"postgres": {"isolation": "server"}}}
    (spec,) = project(tmp_path, table).config.services.values()
    one = space.FOOTPRINTS["postgres"].server
    assert space.service_bytes(spec, 2) == 3 * one


def test_servers_in_containers_or_elsewhere_take_no_room_in_the_run_directory(tmp_path: Path):
    table = {
        "services": {
            "postgres": {"backend": "docker"},
            "valkey": {"backend": "external", "url": "redis://127.0.0.1:6379"},
        }
    }
    config = project(tmp_path, table).config
    assert all(space.service_bytes(spec, 8) == 0 for spec in config.services.values())
    assert estimate(config.services.values(), 8) == space.estimate([], 8)


# -- where the run directory goes -------------------------------------------------------------


def test_tmpfs_with_room_is_used_and_nothing_is_said():
    placed = place(100 * MB, 4, chosen=None, tmpfs=SHM, disk=DISK, free=free_space(shm=1 << 34))
    assert placed == space.Placement(SHM)


def test_small_tmpfs_sends_the_run_to_disk_and_says_so_in_one_line():
    """The line names the free space, the estimate, where data goes and how to choose."""
    free = free_space(shm=64 * MB, tmp=10 << 30)
    placed = place(125 * MB, 4, chosen=None, tmpfs=SHM, disk=DISK, free=free)
    assert placed.base == DISK
    assert placed.note is not None
    assert "\n" not in placed.note
    for part in ("/dev/shm has 64 MB free", "about 125 MB", str(DISK), "--run-dir", "--shm-size"):
        assert part in placed.note


def test_disk_without_room_either_keeps_tmpfs_and_warns():
    free = free_space(shm=64 * MB, tmp=32 * MB)
    placed = place(125 * MB, 4, chosen=None, tmpfs=SHM, disk=DISK, free=free)
    assert placed.base == SHM
    assert placed.note is not None
    assert "/tmp 32 MB" in placed.note
    assert "-n" in placed.note


def test_without_a_writable_shm_the_disk_base_is_kept_with_a_warning():
    """No /dev/shm: the default is on disk already, there is nowhere better to go."""
    placed = place(125 * MB, 4, chosen=None, tmpfs=DISK, disk=DISK, free=free_space(tmp=MB))
    assert placed.base == DISK
    assert placed.note is not None
    assert "/tmp has 1 MB free" in placed.note


def test_a_run_dir_the_user_chose_is_never_moved():
    """Too small, it gets a warning; big enough, nothing is said."""
    chosen = Path("/mnt/ci/runs")
    small = place(125 * MB, 4, chosen=chosen, tmpfs=SHM, disk=DISK, free=free_space(mnt=MB))
    assert small.base == chosen
    assert small.note is not None
    assert small.note.startswith(f"run-dir {chosen} has 1 MB free")
    roomy = place(125 * MB, 4, chosen=chosen, tmpfs=SHM, disk=DISK, free=free_space(mnt=1 << 34))
    assert roomy == space.Placement(chosen)


def test_unknown_free_space_changes_nothing():
    assert place(MB, 1, chosen=None, tmpfs=SHM, disk=DISK, free=free_space()) == space.Placement(
        SHM
    )


def test_shm_size_suggested_fits_the_estimate():
    assert space.shm_size(125 * MB) == "128m"
    assert space.shm_size(300 * MB) == "512m"
    assert space.shm_size(MB) == "128m"


def test_free_bytes_of_a_base_not_made_yet_is_where_it_would_be_made(tmp_path: Path):
    """The base does not exist before the first run: its nearest existing parent counts."""
    room = space.free_bytes(tmp_path / "not" / "yet")
    assert room is not None
    assert room > 0


# -- run_base: what `run` and `up` see --------------------------------------------------------


@pytest.fixture
def bases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The tmpfs and disk bases of run_base, under tmp_path; the shell's settings unread."""
    tmpfs, disk = tmp_path / "shm" / "testfleet-0", tmp_path / "tmp" / "testfleet-0"
    monkeypatch.setattr(common, "default_base", lambda: tmpfs)
    monkeypatch.setattr(common, "disk_base", lambda: disk)
    # tmp_path is longer than a real base: the sockets' limit is tested on its own below.
    monkeypatch.setattr(space, "socket_problem", lambda base, services: None)
    return tmpfs, disk


def fake_free(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **free: int) -> None:
    by_folder = {tmp_path / name: n for name, n in free.items()}

    def free_bytes(path: Path) -> int | None:
        return next((n for root, n in by_folder.items() if path.is_relative_to(root)), None)

    monkeypatch.setattr(space, "free_bytes", free_bytes)


def test_run_base_moves_a_run_that_does_not_fit_in_shm_to_disk(
    tmp_path: Path,
    bases: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    fake_free(monkeypatch, tmp_path, shm=64 * MB, tmp=1 << 34)
    example = project(tmp_path, {"lanes": 4, "services": {"postgres": {}}})
    assert common.run_base(example) == bases[1]
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("testfleet: ")
    assert "on disk instead" in line


def test_run_base_keeps_a_small_run_dir_the_user_chose_with_one_warning(
    tmp_path: Path,
    bases: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    chosen = tmp_path / "mine"
    fake_free(monkeypatch, tmp_path, mine=16 * MB, shm=1 << 34, tmp=1 << 34)
    example = project(tmp_path, {"lanes": 4, "run-dir": str(chosen), "services": {"postgres": {}}})
    assert common.run_base(example) == chosen
    (line,) = capsys.readouterr().err.splitlines()
    assert f"run-dir {chosen} has 16 MB free" in line
    assert "--run-dir" in line


def test_a_run_that_uses_a_running_up_needs_no_room_of_its_own(
    tmp_path: Path,
    bases: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    """The up's stack holds the data (wherever that up put it): nothing to estimate or say."""
    fake_free(monkeypatch, tmp_path, shm=MB, tmp=1 << 34)
    example = project(tmp_path, {"lanes": 4, "services": {"valkey": {}}})
    monkeypatch.setattr(common, "read_descriptor", lambda path: {"identity": identity(example)})
    assert common.run_base(example) == bases[0]
    assert capsys.readouterr().err == ""


# -- a filesystem that fills anyway -----------------------------------------------------------


def test_disk_full_is_recognised_wherever_it_comes_from():
    assert space.disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert space.disk_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    psycopg_like = type("DiskFull", (Exception,), {"sqlstate": "53100"})("could not write")
    assert space.disk_full(psycopg_like)
    assert space.disk_full(ServiceError("postgres failed", details=f"PANIC: {space.NO_SPACE}"))
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = OSError(errno.ENOSPC, "full")
    assert space.disk_full(wrapped)
    assert not space.disk_full(RuntimeError("a bug"))
    assert not space.disk_full(OSError(errno.EACCES, "denied"))


def test_full_error_names_the_place_and_the_ways_out(tmp_path: Path):
    """--shm-size only where it helps: a run directory under /dev/shm."""
    on_disk = space.full_error(tmp_path, OSError(errno.ENOSPC, space.NO_SPACE))
    assert str(tmp_path) in on_disk.message
    assert "--run-dir" in on_disk.message
    assert "--shm-size" not in on_disk.message
    assert on_disk.details == f"OSError: [Errno {errno.ENOSPC}] {space.NO_SPACE}"
    on_shm = space.full_error(SHM, RuntimeError("x"))
    assert "--shm-size" in on_shm.message


def test_a_service_killed_by_a_full_disk_says_how_to_make_room():
    assert space.full_hint("LOG: ready") == ""
    hint = space.full_hint(f"PANIC: could not write: {space.NO_SPACE}", SHM / "run" / "pg.log")
    assert "--run-dir" in hint
    assert "--shm-size" in hint


def test_a_full_disk_is_never_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """Whatever step meets it, ENOSPC is one line naming the fix, exit 3, no traceback."""

    def full(call: object) -> int:
        raise OSError(errno.ENOSPC, space.NO_SPACE)

    monkeypatch.setattr("testfleet.commands.plan.main", full)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n')
    assert main(["-C", str(tmp_path), "plan"]) == 3
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert "Traceback" not in err
    assert err.splitlines()[0] == f"testfleet: error: {space.FULL_SOMEWHERE}"


def test_a_run_dir_too_long_for_unix_sockets_is_one_line_before_anything_starts(tmp_path: Path):
    """PostgreSQL's socket and the lanes' queue live under the run directory; a sun_path holds
    107 bytes. A longer base is refused with the longest it may be, not found deep in a
    server's log (or as an internal error of the queue's bind)."""
    services = project(tmp_path, {"services": {"orders-db": {"kind": "postgres"}}}).config.services
    fits = Path("/dev/shm/testfleet-0")
    assert space.socket_problem(fits, services) is None
    long = Path("/x" * 40)
    problem = space.socket_problem(long, services)
    assert problem is not None
    assert "orders-db's PostgreSQL socket" in problem
    allowed = int(problem.rsplit("at most ", 1)[1].split()[0])
    assert space.socket_problem(Path("/" + "y" * (allowed - 1)), services) is None
    assert space.socket_problem(Path("/" + "y" * allowed), services) is not None
    # Without PostgreSQL the queue's socket is the longest: a little more room.
    assert space.socket_problem(Path("/" + "y" * allowed), {}) is None


def test_run_base_refuses_a_run_dir_too_long_for_sockets(tmp_path: Path):
    chosen = tmp_path / ("d" * 90)
    example = project(tmp_path, {"run-dir": str(chosen), "services": {"postgres": {}}})
    with pytest.raises(ConfigError, match=r"too long for the unix sockets under it"):
        common.run_base(example)
