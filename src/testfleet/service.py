"""What every kind's runtime implements (`Service`), and what the stack gives it
(`StackContext`): the run's directory, supervisor, backends, secrets and placeholders.

Runtimes import this module, never the config or the kinds' registry: a kind's record points
to its runtime, so nothing a runtime imports may lead back to the records."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from testfleet.backends.base import Backend, Handle, Server, Started
from testfleet.backends.native import NativeBackend
from testfleet.binaries import Binary
from testfleet.errors import ServiceError
from testfleet.files import PRIVATE_DIR, TRAVERSABLE_DIR, private_dir, write_private
from testfleet.ports import HOST
from testfleet.processes import ManagedProcess, RunAs, Supervisor
from testfleet.rundir import RunDir
from testfleet.specs import ServerSpec, ServiceSpec

__all__ = ["HOST", "Server", "ServiceView", "StackContext", "Started"]


@dataclass(frozen=True)
class ServiceView:
    """One lane's isolated view of one service: the values its placeholders and env use."""

    name: str
    kind: str
    values: Mapping[str, str]


@dataclass
class StackContext:
    """What services need from the run that starts them."""

    root: Path  # the project's directory
    python: str  # the interpreter of setup commands and command services
    # The variables a service exports with these values of its (the stack knows each kind's).
    exports: Callable[[str, Mapping[str, str]], dict[str, str]]
    run_dir: RunDir
    supervisor: Supervisor
    run_as: RunAs | None
    binaries: Mapping[str, Binary] = field(default_factory=dict)
    lanes: int = 1
    # Every credential of the run, so that logs of processes that may print them (a dev
    # server's banner, the user's own app) have them replaced.
    secrets: list[str] = field(default_factory=list)
    _backends: dict[str, Backend] = field(default_factory=dict)
    _backends_lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False
    lane_handles: dict[int, list[Handle]] = field(default_factory=dict)
    _current: threading.local = field(default_factory=threading.local)

    def backend(self, name: str) -> Backend:
        """The run's backend of that name, made on first use (Docker's connects to the engine
        then, so runs without containers never need one)."""
        with self._backends_lock:
            if self._stopped:
                # A lane still starting after Ctrl-C: nothing new may start.
                raise ServiceError("not started, the run is stopping")
            if name not in self._backends:
                if name == "native":
                    self._backends[name] = NativeBackend(self.supervisor)
                elif name == "docker":
                    from testfleet.backends.docker import DockerBackend

                    self._backends[name] = DockerBackend(
                        self.run_dir, self.supervisor.keep_dir, self.root
                    )
                elif name == "external":
                    from testfleet.backends.external import ExternalBackend

                    self._backends[name] = ExternalBackend()
                else:
                    raise ServiceError(f"no {name} backend runs servers")
            return self._backends[name]

    def start(self, spec: ServiceSpec, server: Server) -> Started:
        """Run `server` on the backend its service asked for; a lane's own servers are
        remembered for that lane, so a lane can be released on its own (rechecks)."""
        started = self.backend(spec.backend_name).start(server)
        lane = getattr(self._current, "lane", None)
        if lane is not None:
            with self._backends_lock:
                self.lane_handles.setdefault(lane, []).append(started.handle)
        return started

    @contextlib.contextmanager
    def for_lane(self, lane: int) -> Iterator[None]:
        """Servers started by this thread in the block belong to `lane`."""
        self._current.lane = lane
        try:
            yield
        finally:
            self._current.lane = None

    def release(self, lane: int) -> None:
        """Stop the servers only `lane` used (shared ones stay)."""
        with self._backends_lock:
            handles = self.lane_handles.pop(lane, [])
        # All forgotten first: a server stopped on purpose, or one that exits because another
        # of the lane stopped, is never taken for one that died (an up watches while it
        # recycles lanes). Then stopped, the last started first.
        for handle in handles:
            if isinstance(handle, ManagedProcess):
                self.supervisor.forget(handle)
        for handle in reversed(handles):
            handle.stop()

    def handles(self) -> list[Handle]:
        """Every server the run has now, of every backend."""
        with self._backends_lock:
            others = [b for name, b in self._backends.items() if name != "native"]
        return [*self.supervisor.processes(), *(h for b in others for h in b.handles())]

    def lane_of(self, handle: Handle) -> int | None:
        with self._backends_lock:
            return next((n for n, hs in self.lane_handles.items() if handle in hs), None)

    def close(self) -> None:
        """From now on no backend starts anything: teardown has begun."""
        with self._backends_lock:
            self._stopped = True

    def dead(self) -> list[Handle]:
        """Servers of any backend that ended although nobody stopped them."""
        # Every native process is the supervisor's, whether or not a native server started.
        with self._backends_lock:
            others = [b for name, b in self._backends.items() if name != "native"]
        dead: list[Handle] = list(self.supervisor.dead())
        return dead + [handle for backend in others for handle in backend.dead()]

    def stop_backends(self) -> None:
        """Stop every container; native processes are stopped by the run's supervisor."""
        with self._backends_lock:
            self._stopped = True
            backends = [b for name, b in self._backends.items() if name != "native"]
        for backend in backends:
            backend.stop_all()

    def secret(self) -> str:
        value = secret()
        self.secrets.append(value)
        return value

    def service_secret(self, name: str, spec: ServiceSpec) -> str:
        """A credential for a service's servers: new for every run, except for containers
        kept between runs (`reuse = true`), which keep the one they were made with. That one
        lives in a private file of this user's, so a kept container's description (and name)
        stays the same from run to run."""
        if not (isinstance(spec, ServerSpec) and spec.reuse and spec.backend_name == "docker"):
            return self.secret()
        from testfleet.backends.docker_engine import reuse_dir

        key = hashlib.sha256(f"{self.root}|{name}|{spec.kind}".encode()).hexdigest()
        path = reuse_dir() / f"secret-{key[:16]}"
        if not path.is_file():
            # Written whole, then linked into place: a run starting at the same moment reads
            # either no file or the complete one, and the first link wins.
            staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            write_private(staged, secret())
            with contextlib.suppress(FileExistsError):
                os.link(staged, path)
            staged.unlink()
        value = path.read_text(encoding="ascii").strip()
        self.secrets.append(value)
        return value

    @property
    def run_id(self) -> str:
        return self.run_dir.run_id

    def common_values(self, lane: int) -> dict[str, str]:
        """The placeholders every value may use: `{lane}`, `{lanes}`, `{run_id}`, ..."""
        return {
            "lane": str(lane),
            "lanes": str(self.lanes),
            "run_id": self.run_dir.run_id,
            "run_dir": str(self.run_dir.path),
            "project_dir": str(self.root),
        }

    def service_dir(self, name: str, *, traversable: bool = False) -> Path:
        """The service's directory in the run: private, unless another account (PostgreSQL's,
        under root) must walk through it to its own folder."""
        return private_dir(
            self.run_dir.path / name, TRAVERSABLE_DIR if traversable else PRIVATE_DIR
        )

    def folder(self, name: str, label: str) -> Path:
        """A private folder for one of the service's servers: its config, data and log."""
        return private_dir(self.service_dir(name) / label)


class Service(Protocol):
    """A service of the stack. `start` runs once per run; `provision` once per lane."""

    name: str

    def start(self) -> None: ...

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView: ...

    def forget(self, lane: int) -> None:
        """Undo what `provision(lane)` made on a shared server, so that the lane number can
        be provisioned afresh (a `testfleet up` hands lanes to one run after another)."""
        ...

    def stop(self) -> None: ...


def secret() -> str:
    """A random credential for one run: URL-safe, so it needs no escaping in a URL."""
    return secrets.token_hex(16)
