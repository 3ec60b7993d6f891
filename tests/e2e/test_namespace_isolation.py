"""Lanes in network namespaces (`network = "namespace"`) are kept apart from testfleet, from
each other and from what outlives them: a lane's tests hold no more capabilities than under
plain pytest, a daemon a test leaves (own session, emptied environment) goes when testfleet
is SIGKILLed, and a lane cannot reach another lane's PostgreSQL through a unix socket.

Each test runs as this user and, when the tests run as root, as `nobody` too: another user's
testfleet makes its lanes' namespaces inside a user namespace of its own, where the kernel
hands out capabilities that plain pytest would not have.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from testfleet.netns import unavailable
from testfleet.rundir import process_start_ticks
from tests.helpers import REPO, alive, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

OTHER_USER = "nobody"
SYSTEM_PYTHON = Path("/usr/bin/python3")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAMESPACE = '[project]\nname = "p"\nversion = "0"\n[tool.testfleet]\nnetwork = "namespace"\n'


@dataclass(frozen=True)
class User:
    """Who runs testfleet (and plain pytest) in a test, and with which interpreter."""

    name: str
    uid: int
    gid: int
    python: Path

    def own(self, path: Path) -> Path:
        if self.uid != os.geteuid():
            subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)], check=True)
        return path

    def start(self, project: Path, base: Path, *args: str) -> subprocess.Popen[str]:
        """`python -m ARGS` as this user in `project`, its runs under `base`; the pid is the
        command's own (no runuser in between), so a signal to it reaches testfleet."""
        other = self.uid != os.geteuid()
        env: Mapping[str, str] = (
            {"PATH": PATH, "LANG": "C.UTF-8", "HOME": str(project / ".home")}
            if other
            else os.environ
        )
        return subprocess.Popen(
            [str(self.python), "-m", *args],
            cwd=project,
            env={**env, "TESTFLEET_RUN_DIR": str(base)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            user=self.uid if other else None,
            group=self.gid if other else None,
            extra_groups=[] if other else None,
        )

    def run(self, project: Path, base: Path, *args: str) -> subprocess.CompletedProcess[str]:
        process = self.start(project, base, *args)
        try:
            out, err = process.communicate(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def other_venv() -> Iterator[Path]:
    """A venv `nobody` can run: the system's Python (pyenv's lives under /root) with
    testfleet from this checkout installed (not linked: the checkout may be closed to it)."""
    if os.geteuid() != 0 or not SYSTEM_PYTHON.exists():
        pytest.skip("needs root (to act as another user) and /usr/bin/python3")
    folder = Path(tempfile.mkdtemp(prefix="tf-ns-venv-"))
    venv = folder / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{REPO}[postgres]"],
        check=True,
        timeout=600,
    )
    subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
    yield venv
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["this user", "another user"])
def user(request: pytest.FixtureRequest) -> User:
    if request.param == "this user":
        entry = pwd.getpwuid(os.geteuid())
        return User(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(sys.executable))
    venv: Path = request.getfixturevalue("other_venv")
    entry = pwd.getpwnam(OTHER_USER)
    return User(OTHER_USER, entry.pw_uid, entry.pw_gid, venv / "bin" / "python")


@pytest.fixture
def project(user: User) -> Iterator[Path]:
    """A project folder of the user's own (pytest's tmp_path is closed to another user)."""
    folder = Path(tempfile.mkdtemp(prefix="tf-ns-project-"))
    (folder / ".home").mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def base(user: User) -> Iterator[Path]:
    """The user's own run-dir base: short (unix sockets live under it), on tmpfs when there
    is one; the test looks at no other runs than those under it."""
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="tf-", dir=str(shm) if shm.is_dir() else None))
    folder.chmod(0o711)
    user.own(folder)
    yield folder
    left = list(folder.iterdir())
    shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"runs left {left}"


CAPABILITIES = """\
import json, os, pathlib, subprocess

def status(text):
    return {k: v.strip() for k, _, v in (l.partition(":") for l in text.splitlines())
            if k.startswith("Cap")}

def test_capabilities(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    try:
        secret.read_text()
        readable = True
    except PermissionError:
        readable = False
    child = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True)
    where = os.environ.get("TESTFLEET_LANE", "plain")
    pathlib.Path(f"caps-{where}.json").write_text(json.dumps({
        "self": status(pathlib.Path("/proc/self/status").read_text()),
        "child": status(child.stdout),
        "readable": readable,
    }))
"""


def test_lane_has_the_capabilities_of_plain_pytest(user: User, project: Path, base: Path):
    """A lane's test and its children hold the capabilities plain pytest would have (none
    for a user other than root), so a mode-000 file stays unreadable."""
    (project / "pyproject.toml").write_text(NAMESPACE)
    (project / "test_caps.py").write_text(CAPABILITIES)
    user.own(project)
    plain = user.run(project, base, "pytest", "-q", "-p", "no:cacheprovider", "test_caps.py")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    fleet = user.run(project, base, "testfleet", "run")
    assert fleet.returncode == 0, fleet.stderr
    expected = json.loads((project / "caps-plain.json").read_text())
    lane = json.loads((project / "caps-1.json").read_text())
    print(f"plain pytest: {expected}\nlane: {lane}")
    assert lane["readable"] == expected["readable"]
    for who in ("self", "child"):
        for field in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
            assert lane[who][field] == expected[who][field], (who, field)
    if user.uid != 0:
        assert int(lane["self"]["CapEff"], 16) == 0
        assert lane["readable"] is False
        # Not even to raise again after an execve of a file with capabilities.
        assert int(lane["self"]["CapBnd"], 16) == 0


DAEMON = """\
import os, pathlib, time

def test_daemon():
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            # The daemon: its own session, no parent but init, not one variable of the run.
            pathlib.Path("daemon.tmp").write_text(str(os.getpid()))
            os.rename("daemon.tmp", "daemon.pid")
            os.execve("/bin/sleep", ["sleep", "300"], {})
        os._exit(0)
    os.waitpid(first, 0)
    time.sleep(300)
"""


def test_daemon_with_an_empty_environment_goes_after_sigkill(user: User, project: Path, base: Path):
    """A daemon a lane's test left (double fork, setsid, `env -i`) carries no mark of the
    run; the reaper finds it by the lane's network namespace when testfleet is SIGKILLed."""
    (project / "pyproject.toml").write_text(NAMESPACE)
    (project / "test_daemon.py").write_text(DAEMON)
    user.own(project)
    pid_file = project / "daemon.pid"
    run = user.start(project, base, "testfleet", "run")
    daemon: list[tuple[int, int]] = []
    try:
        wait_for(pid_file.exists, timeout=120, what="the daemon")
        pid = int(pid_file.read_text())
        daemon.append((pid, process_start_ticks(pid) or 0))
        wait_for(lambda: Path(f"/proc/{pid}/comm").read_text().strip() == "sleep", what="exec")
        assert Path(f"/proc/{pid}/environ").read_bytes() == b""
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=30)
        wait_for(lambda: alive(daemon) == [], timeout=30, what="the daemon to be stopped")
        wait_for(lambda: not any(base.iterdir()), timeout=30, what="the run dir to go")
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()
        for pid in alive(daemon):  # the test failed: still leave nothing behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


REACH = """\
import os, pathlib, time
import psycopg
import pytest

def wait(pattern, count):
    deadline = time.monotonic() + 120
    while len(list(pathlib.Path.cwd().glob(pattern))) < count:
        assert time.monotonic() < deadline, f"waited for {count} {pattern}"
        time.sleep(0.02)

def test_reach():
    lane = os.environ["TESTFLEET_LANE"]
    pathlib.Path(f"up-{lane}").touch()
    wait("up-*", 2)  # both lanes' servers run now
    with psycopg.connect(os.environ["POSTGRES_URL"], connect_timeout=5) as own:
        own.execute("SELECT 1")
    run_dir = pathlib.Path(os.environ["_TESTFLEET_RUN"])
    others = [d for d in (run_dir / "postgres").glob("lane*") if d.name != f"lane{lane}"]
    assert others, "the other lane's server folder"
    assert all((d / "data" / "postmaster.pid").exists() for d in others)
    password = psycopg.conninfo.conninfo_to_dict(os.environ["POSTGRES_URL"])["password"]
    tried = []
    for folder in others:
        # Every socket the other lane's server made; its default one when it made none.
        sockets = sorted(folder.rglob(".s.PGSQL.*[0-9]")) or [folder / ".s.PGSQL.5432"]
        for socket in sockets:
            port = int(socket.name.rsplit(".", 1)[1])
            for secret in ("", password):
                tried.append(str(socket))
                with pytest.raises(psycopg.OperationalError):
                    psycopg.connect(host=str(socket.parent), port=port, user="testfleet",
                                    password=secret, dbname="test", connect_timeout=5).close()
    print("tried", tried)
    pathlib.Path(f"done-{lane}").touch()
    wait("done-*", 2)  # the other lane's server stays until this lane has tried

def test_after():
    pass
"""


def test_lane_cannot_reach_another_lanes_postgres_through_its_socket(
    user: User, project: Path, base: Path
):
    """Lanes in namespaces meet only their own servers: a unix socket in the run directory is
    no way around that, with or without a password."""
    (project / "pyproject.toml").write_text(NAMESPACE + "[tool.testfleet.services.postgres]\n")
    for name in ("a", "b"):  # a module a lane: both run side by side
        (project / f"test_{name}.py").write_text(REACH)
    user.own(project)
    result = user.run(project, base, "testfleet", "run", "-n", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "4 passed" in result.stderr
