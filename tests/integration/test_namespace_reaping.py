"""What runs in a lane's network namespace is the run's, whatever its environment and
process group: the reaper finds it through the recorded holder, and a namespace stopped
early takes it along."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testfleet.netns import LaneNamespace, start_namespace, unavailable
from testfleet.reaper import kill_in_namespaces, kill_namespaced
from testfleet.rundir import NAMESPACES_NAME, process_start_ticks, recorded
from testfleet.runtime import Run
from tests.helpers import alive, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


@pytest.fixture
def base() -> Iterator[Path]:
    """A run-dir base of the test's own: it looks at no other run."""
    folder = Path(
        tempfile.mkdtemp(prefix="tf-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def daemon_in(namespace: LaneNamespace, folder: Path) -> Iterator[tuple[int, int]]:
    """A `sleep` in the namespace with its own session and no environment at all, its
    parent gone: nothing but the namespace ties it to the run."""
    pid_file = folder / "daemon.pid"
    script = (
        f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}"
        " && exec /usr/bin/env -i /bin/sleep 300"
    )
    subprocess.run(
        namespace.wrap(["env", "-i", "/usr/bin/setsid", "-f", "/bin/sh", "-c", script]),
        check=True,
        env={},
    )
    wait_for(pid_file.exists, what="the daemon")
    pid = int(pid_file.read_text())
    daemon = (pid, process_start_ticks(pid) or 0)
    try:
        wait_for(lambda: Path(f"/proc/{pid}/comm").read_text() == "sleep\n", what="exec")
        assert Path(f"/proc/{pid}/environ").read_bytes() == b""
        yield daemon
    finally:
        for left in alive([daemon]):
            os.kill(left, signal.SIGKILL)


def test_reaper_finds_a_daemon_by_its_lanes_namespace(base: Path):
    with Run(base) as run:
        folder = run.run_dir.path / "ns"
        folder.mkdir()
        namespace = start_namespace(run.supervisor, folder, 1)
        holder = (namespace.holder_pid, process_start_ticks(namespace.holder_pid) or 0)
        assert recorded(run.run_dir.path, NAMESPACES_NAME) == [holder]
        with daemon_in(namespace, folder) as daemon:
            assert kill_namespaced(run.run_dir.path) == 2  # the daemon and the holder
            wait_for(lambda: alive([daemon]) == [], what="the daemon to be stopped")


def test_a_holder_whose_pid_is_another_process_now_names_no_namespace(base: Path):
    """A recorded holder that is gone (its pid maybe another's) is not believed: nothing in
    whatever namespace that pid is in now is touched."""
    with Run(base) as run:
        folder = run.run_dir.path / "ns"
        folder.mkdir()
        namespace = start_namespace(run.supervisor, folder, 1)
        with daemon_in(namespace, folder) as daemon:
            wrong = (namespace.holder_pid, (process_start_ticks(namespace.holder_pid) or 0) + 1)
            assert kill_in_namespaces([wrong]) == 0
            assert alive([daemon]) == [daemon[0]]


def test_a_namespace_stopped_early_takes_its_daemons_along(base: Path):
    """A lane released before the run ends (rechecks come next) leaves nothing running."""
    with Run(base) as run:
        folder = run.run_dir.path / "ns"
        folder.mkdir()
        namespace = start_namespace(run.supervisor, folder, 1)
        with daemon_in(namespace, folder) as daemon:
            namespace.stop(run.supervisor)
            wait_for(lambda: alive([daemon]) == [], what="the daemon to be stopped")
