"""Docker for the tests that need it: an engine (started here when none answers) and the local
images of `testfleet images build` (no registry is reachable, so nothing is pulled).

    images, done = prepare_docker()   # raises DockerUnavailable(reason) when it cannot
    ...
    done()                            # the last session out stops a dockerd the tests started

Two copies of the suite may run at once (two checkouts, two CI jobs on one machine) and share
one engine: a copy that started it must not stop it under the other. Each session holds a
shared lock on a file while it uses the engine; the one that ends last (it gets the lock
alone) stops the dockerd a session started, whichever session that was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

import psutil

from testfleet.images.build import build_images
from testfleet.images.recipes import IMAGE_TAGS

DOCKERD = Path("/usr/sbin/dockerd")
START_TIMEOUT = 60.0  # seconds for a dockerd we start to answer `docker info`
STOP_TIMEOUT = 30.0  # seconds after SIGTERM before SIGKILL
# Shared by the sessions using the engine; the pid file names a dockerd a session started.
SHARING_LOCK = Path(tempfile.gettempdir()) / "testfleet-tests-dockerd.lock"
STARTED_BY_TESTS = Path(tempfile.gettempdir()) / "testfleet-tests-dockerd.pid"
# The keeper of the dockerd this session started, referenced for the session's life: a Popen
# collected while its process runs warns (ResourceWarning, an error under filterwarnings =
# error) at whatever test comes next; the session that stops dockerd reaps the keeper.
_STARTED: list[subprocess.Popen[bytes]] = []
# dockerd runs under a keeper that is a child subreaper. containerd's shims daemonize, and an
# orphan goes to the nearest subreaper among its ancestors: without the keeper, this pytest
# process whenever a test runs testfleet's Run in-process (a subreaper then, which kills the
# children it did not start when it ends). It would kill the shims, so the containers, of every
# session sharing the engine. The keeper reaps them instead, prints dockerd's pid, and exits
# with dockerd's exit code when dockerd ends.
KEEPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
dockerd = subprocess.Popen(sys.argv[1:], stdout=2)
print(dockerd.pid, flush=True)
while True:
    pid, status = os.wait()
    if pid == dockerd.pid:
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
"""


class DockerUnavailable(Exception):
    """No Docker engine can be used here; the message says why and what would fix it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def engine_available() -> str | None:
    """None when `docker info` answers, else the reason it does not."""
    if shutil.which("docker") is None:
        return "no docker client (apt-get install docker.io)"
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if done.returncode == 0 and done.stdout.strip():
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"`docker info` exited with {done.returncode}"


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def ensure_engine(extra_args: Sequence[str] = ()) -> int | None:
    """Make sure a Docker engine answers.

    Returns None when one already did (it is left alone), else starts `dockerd` (as root only),
    waits until `docker info` answers, and returns its pid (prepare_docker's `done` stops it
    and its children, containerd). `extra_args` go to dockerd (another socket or data
    root, for a second engine; `docker` then needs DOCKER_HOST). A second engine shares the
    host's network: never give it `--bridge none`, with which dockerd deletes the host's
    `docker0` and so breaks the first engine's containers. Raises DockerUnavailable."""
    reason = engine_available()
    if reason is None:
        return None
    if shutil.which("docker") is None:
        raise DockerUnavailable(reason)
    if os.geteuid() != 0:
        raise DockerUnavailable(f"{reason}; only root can start dockerd here (start it first)")
    if not DOCKERD.exists():
        raise DockerUnavailable(f"{reason}; no {DOCKERD} to start (apt-get install docker.io)")
    fd, name = tempfile.mkstemp(prefix="testfleet-dockerd-", suffix=".log")
    log = Path(name)
    with os.fdopen(fd, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-c", KEEPER, str(DOCKERD), *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=handle,
            start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not for dockerd
        )
    assert proc.stdout is not None
    with proc.stdout:
        line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.wait()
        raise DockerUnavailable(f"dockerd did not start; {log}:\n{_log_tail(log)}")
    pid = int(line)
    seen: list[psutil.Process] = []  # its children (containerd), once it answers
    stop = _stopper(proc, pid, log, seen)
    deadline = time.monotonic() + START_TIMEOUT
    interval = 0.05
    while True:
        if engine_available() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                seen.extend(psutil.Process(pid).children(recursive=True))
            _STARTED.append(proc)
            return pid
        try:
            # The keeper ends when dockerd does: an early exit ends the wait at once.
            code = proc.wait(timeout=min(interval, max(deadline - time.monotonic(), 0.01)))
        except subprocess.TimeoutExpired:
            pass
        else:
            stop()
            if engine_available() is None:
                return None  # another process's dockerd came up first (ours found its pidfile)
            raise DockerUnavailable(f"dockerd exited with {code}; {log}:\n{_log_tail(log)}")
        if time.monotonic() >= deadline:
            stop()
            raise DockerUnavailable(
                f"dockerd did not answer within {START_TIMEOUT:.0f} s; {log}:\n{_log_tail(log)}"
            )
        interval = min(interval * 2, 0.5)


def _stopper(
    proc: subprocess.Popen[bytes], pid: int, log: Path, seen: list[psutil.Process]
) -> Callable[[], None]:
    done = False

    def stop() -> None:
        """SIGTERM, wait, SIGKILL: the dockerd we started, then whatever it started."""
        nonlocal done
        if done:
            return
        done = True
        # Seen when it answered, and now: containerd outlives a dockerd that died on its own.
        children = list(seen)
        if proc.poll() is None:  # the keeper lives, so dockerd has not been reaped: `pid` is it
            with contextlib.suppress(psutil.NoSuchProcess):
                dockerd = psutil.Process(pid)
                children += dockerd.children(recursive=True)
                dockerd.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
                proc.wait()
        _end(children)
        print(f"dockerd {pid} stopped; its log: {log}", file=sys.stderr)

    return stop


def _end(processes: Iterable[psutil.Process]) -> None:
    """Wait for processes (containerd, after its dockerd) to end; SIGTERM then SIGKILL them.

    psutil.Process remembers each one's start time, so a reused PID is never signalled."""
    left = [p for p in dict.fromkeys(processes) if p.is_running()]
    _, left = psutil.wait_procs(left, timeout=5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
        _, left = psutil.wait_procs(left, timeout=STOP_TIMEOUT if sig == signal.SIGTERM else 5)
    if left:
        raise RuntimeError(f"still running after SIGKILL: {[p.pid for p in left]}")


def image_tags() -> dict[str, str]:
    """kind -> tag of every local image, built or not."""
    return dict(IMAGE_TAGS)


def prepare_docker(
    kinds: Iterable[str] | None = None, force: bool = False
) -> tuple[dict[str, str], Callable[[], None]]:
    """An engine and the local images: (kind -> tag of the images present, done).

    `done` ends this session's use of the engine: the last session out stops a dockerd that
    the tests started (one running before them is left alone). Raises DockerUnavailable when
    there is no engine and none can be started; a failed image build raises the builder's own
    error (a bug to see, not a reason to skip)."""
    sharing = SHARING_LOCK.open("a+")
    # Waits while a session that ended last is stopping the engine: then one is started anew.
    fcntl.flock(sharing, fcntl.LOCK_SH)
    done = _leaving(sharing)
    try:
        pid = ensure_engine()
        if pid is not None:
            # Its log (its stdout) goes with it when it stops: a temp file the tests made.
            log = os.readlink(f"/proc/{pid}/fd/1")
            STARTED_BY_TESTS.write_text(f"{pid} {psutil.Process(pid).create_time()} {log}\n")
        images = build_images(kinds, force)
    except BaseException:
        done()
        raise
    return images, done


def _leaving(sharing: IO[str]) -> Callable[[], None]:
    def done() -> None:
        if sharing.closed:
            return
        try:
            fcntl.flock(sharing, fcntl.LOCK_UN)
            try:
                fcntl.flock(sharing, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another session still uses the engine: the last one stops it
            _stop_started_by_tests()
        finally:
            sharing.close()

    return done


def _stop_started_by_tests() -> None:
    """Stop the dockerd a session of the tests started, if it still runs (pid and start time
    must both match: a reused pid is someone else's), then its children."""
    try:
        pid_text, created, log = STARTED_BY_TESTS.read_text().split(maxsplit=2)
    except (OSError, ValueError):
        return
    STARTED_BY_TESTS.unlink(missing_ok=True)
    try:
        dockerd = psutil.Process(int(pid_text))
        if abs(dockerd.create_time() - float(created)) > 0.01:
            return
        children = dockerd.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    _end([dockerd, *children])
    for keeper in _STARTED:
        with contextlib.suppress(subprocess.TimeoutExpired):
            keeper.wait(timeout=STOP_TIMEOUT)  # ours: it ends as its dockerd has, and is reaped
    print(f"dockerd {dockerd.pid} stopped", file=sys.stderr)
    if Path(log.strip()).name.startswith("testfleet-dockerd-"):
        Path(log.strip()).unlink(missing_ok=True)
