"""Finding uv, and running it bounded in time and stoppable all at once when the run is
interrupted.

uv runs with the caller's environment variables, credentials for private indexes included:
they are for uv, and reach nothing else (see `testfleet.credentials.child_environ`).

Within a run, every uv is told to the run as it starts (`on_spawn`: its process group goes
into the run's records) and carries the run's mark: when testfleet is killed mid-build, the
run's reaper stops uv and the build under it, which would otherwise hold uv's locks and keep
the next build waiting.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testfleet.errors import ConfigError, ServiceError


def find_uv() -> Path:
    """The uv binary: the one from the `uv` package next to testfleet, else the one on PATH."""
    found = find_uv_or_none()
    if found is None:
        raise ConfigError(
            "python lists versions, which need uv to make their environments, and uv is not"
            " installed; pip install uv (next to testfleet), or set python to one interpreter"
        )
    return found


def find_uv_or_none() -> Path | None:
    try:
        # The `uv` package from PyPI ships the binary; looked up by name so that testfleet
        # type-checks and runs without it (a uv on PATH serves as well).
        find_uv_bin = importlib.import_module("uv").find_uv_bin
        return Path(find_uv_bin())
    except (ImportError, AttributeError, FileNotFoundError):
        pass
    on_path = shutil.which("uv")
    return Path(on_path) if on_path else None


class Cancelled(Exception):
    """The run was interrupted while this build waited or ran: stop quietly."""


@dataclass(frozen=True)
class UvOutput:
    returncode: int
    text: str
    timed_out: bool = False


class UvRunner:
    """Runs uv with the caller's environment variables (credentials included: they are for uv),
    bounded in time, and able to stop every uv it started when the run is interrupted."""

    def __init__(
        self,
        binary: Path,
        environ: Mapping[str, str],
        timeout: float,
        *,
        on_spawn: Callable[[int], None] = lambda pid: None,
    ) -> None:
        self.binary = binary
        self.environ = environ
        self.timeout = timeout
        self.on_spawn = on_spawn
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[str]] = set()

    def run(
        self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
    ) -> UvOutput:
        # An activated venv is not where uv should install (and uv warns about it).
        environ = {k: v for k, v in self.environ.items() if k != "VIRTUAL_ENV"}
        environ.update({"UV_NO_PROGRESS": "1", **(env or {})})
        with self._lock:
            if self.cancelled.is_set():
                raise Cancelled
            try:
                proc = self._start(args, cwd, environ)
            except OSError as exc:
                raise ServiceError(
                    f"uv at {self.binary} could not be started ({exc.strerror or exc});"
                    " reinstall uv (pip install uv)"
                ) from exc
            self._live.add(proc)
        try:
            self.on_spawn(proc.pid)
            text, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            text, _ = proc.communicate()
            return UvOutput(proc.returncode, text or "", timed_out=True)
        except BaseException:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            with self._lock:
                self._live.discard(proc)
        if self.cancelled.is_set():
            raise Cancelled
        return UvOutput(proc.returncode, text or "")

    def _start(
        self, args: Sequence[str], cwd: Path, environ: Mapping[str, str]
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.binary), *args],
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            # Its own process group: Ctrl-C goes to us, and we stop uv with its children.
            start_new_session=True,
        )

    def stop_all(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop every uv running now and refuse to start more."""
        with self._lock:
            self.cancelled.set()
            for proc in self._live:
                if proc.poll() is None:  # once reaped, its pid may belong to someone else
                    _kill_group(proc, sig)


def _kill_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def uv_version(uv: UvRunner) -> str:
    out = uv.run(["--version"], cwd=Path(tempfile.gettempdir()))
    if out.returncode != 0:
        raise ServiceError(f"uv at {uv.binary} does not run (uv --version exited {out.returncode})")
    return out.text.strip()
