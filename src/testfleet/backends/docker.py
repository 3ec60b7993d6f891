"""Docker backend: servers in containers, through testcontainers.

Every container carries the run's labels, so teardown, the reaper (after a SIGKILL of
testfleet) and the next run remove them by label, whatever happened to the handles. Ports are
published on 127.0.0.1 only. testcontainers' own reaper container (Ryuk) is not used: it needs
an image pulled from a registry, and the run's reaper already outlives testfleet.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from testfleet.backends.base import ContainerLaunch, Server, Started
from testfleet.errors import ConfigError, ServiceError
from testfleet.files import PRIVATE_DIR, write_private
from testfleet.rundir import CONTAINERS_MARKER as MARKER
from testfleet.rundir import RunDir

if TYPE_CHECKING:
    from docker.models.containers import Container
    from testcontainers.core.container import DockerContainer

HOST = "127.0.0.1"
LABEL_RUN = "testfleet.run"
LABEL_RUN_DIR = "testfleet.run-dir"
LABEL_UID = "testfleet.uid"
KEPT_LOGS = 30
STOP_SECONDS = 5


def _engine_error(exc: Exception) -> ServiceError:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return ServiceError(
        f"no Docker engine answers at {host} ({type(exc).__name__}); start dockerd (or"
        ' Docker Desktop), or run the service with backend = "native"'
    )


def _client() -> Any:
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # docker raises DockerException, requests' errors, OSError
        raise _engine_error(exc) from None
    return client


class ContainerHandle:
    """A running container, seen the way readiness and teardown see a process."""

    def __init__(self, name: str, container: DockerContainer, keep_dir: Path | None) -> None:
        self.name = name
        self.container = container
        self._keep_dir = keep_dir
        self._kept: Path | None = None
        self._stopped = False

    @property
    def wrapped(self) -> Container:
        return self.container.get_wrapped_container()

    def exit_code(self) -> int | None:
        try:
            self.wrapped.reload()
        except Exception:
            return -9 if self._stopped else -1  # removed under us: it is not running
        state = self.wrapped.attrs.get("State", {})
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        if state.get("OOMKilled"):
            return -9
        return int(state.get("ExitCode", -1))

    def log_text(self) -> str:
        try:
            return self.wrapped.logs().decode(errors="replace")
        except Exception:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def keep_log(self) -> Path:
        """The container's log, copied into the project's `.testfleet/logs` (the container and
        its log go with teardown)."""
        if self._kept is not None:
            return self._kept
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")
        folder = self._keep_dir or Path.cwd() / ".testfleet" / "logs"
        target = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-docker.log"
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
            write_private(target, self.log_text())
        except OSError:
            return target
        self._kept = target
        return target

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(Exception):  # already gone
            self.wrapped.remove(force=True, v=True)


class DockerBackend:
    """Runs `Server.container` launches; `stop_all` removes every container of the run."""

    name = "docker"

    def __init__(self, run_dir: RunDir, keep_dir: Path | None = None) -> None:
        try:
            from testcontainers.core.config import testcontainers_config
        except ImportError:
            raise ConfigError(
                'services with backend = "docker" run through testcontainers;'
                " pip install 'testfleet[docker]'"
            ) from None

        # No Ryuk: its image would have to be pulled, and our reaper does its work.
        testcontainers_config.ryuk_disabled = True
        self.run_dir = run_dir
        self.keep_dir = keep_dir
        self.client = _client()
        self._handles: list[ContainerHandle] = []
        self._lock = threading.Lock()
        self._closed = False
        write_private(run_dir.path / MARKER, f"{run_dir.run_id}\n")
        remove_orphans(self.client)

    def labels(self) -> dict[str, str]:
        return {
            LABEL_RUN: self.run_dir.run_id,
            LABEL_RUN_DIR: str(self.run_dir.path),
            LABEL_UID: str(os.getuid()),
        }

    def start(self, server: Server) -> Started:
        from testfleet.readiness import wait_ready

        launch = server.container
        if launch is None:
            raise ServiceError(f"{server.name}: this kind has no container image")
        self._check_image(server.name, launch.image)
        container = self._describe(server, launch)
        handle = ContainerHandle(server.name, container, self.keep_dir)
        with self._lock:
            if self._closed:
                raise ServiceError(f"{server.name}: not started, the run is stopping")
        try:
            container.start()
        except Exception as exc:
            # A container created but not started still carries our labels: remove it now.
            self._remove_named(container)
            raise self._start_error(server, exc) from None
        with self._lock:
            self._handles.append(handle)
            closed = self._closed
        if closed:  # teardown ran while the engine was starting it
            handle.stop()
            raise ServiceError(f"{server.name}: not started, the run is stopping")
        port = self._published_port(handle, launch.inner_port)
        wait_ready(
            handle, server.probe(HOST, port, handle), timeout=server.timeout, what=server.name
        )
        return Started(handle, HOST, port)

    def _check_image(self, name: str, image: str) -> None:
        import docker.errors

        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            try:
                self.client.images.pull(image)
            except Exception as exc:
                raise ServiceError(
                    f"{name}: image {image} is not on this engine and could not be pulled"
                    f" ({str(exc).splitlines()[0][:160]}); docker pull or build it, or set"
                    " image to one that is"
                ) from None
        except Exception as exc:
            raise _engine_error(exc) from None

    def _describe(self, server: Server, launch: ContainerLaunch) -> DockerContainer:
        from testcontainers.core.container import DockerContainer

        slug = re.sub(r"[^a-z0-9_.-]+", "-", server.name.lower()).strip("-")
        container = DockerContainer(launch.image)
        container.with_name(f"testfleet-{self.run_dir.run_id}-{slug}")
        if launch.command:
            container.with_command(list(launch.command))
        for key, value in launch.env.items():
            container.with_env(key, value)
        # 127.0.0.1 only: a published port on every interface would let the network in.
        cast(dict[str, Any], container.ports)[f"{launch.inner_port}/tcp"] = (
            (HOST, server.port) if server.port else (HOST,)
        )
        for path, options in launch.tmpfs.items():
            container.tmpfs[path] = options
        for path, content in launch.files.items():
            container.with_copy_into_container(content, path, 0o444)
        extra: dict[str, Any] = {"labels": self.labels()}
        if launch.limits is not None and launch.limits.memory:
            extra["mem_limit"] = launch.limits.memory
        if launch.limits is not None and launch.limits.cpus:
            extra["nano_cpus"] = int(launch.limits.cpus * 1e9)
        container.with_kwargs(**extra)
        return container

    def _published_port(self, handle: ContainerHandle, inner: int) -> int:
        handle.wrapped.reload()
        bindings = handle.wrapped.attrs["NetworkSettings"]["Ports"].get(f"{inner}/tcp") or []
        for binding in bindings:
            if binding.get("HostIp") in (HOST, "") and binding.get("HostPort"):
                return int(binding["HostPort"])
        from testfleet.readiness import exited_while_starting

        code = handle.exit_code()
        error = (
            exited_while_starting(handle, code, handle.name)
            if code is not None
            else ServiceError(f"{handle.name}: the engine published no port for {inner}/tcp")
        )
        handle.stop()
        raise error

    def _start_error(self, server: Server, exc: Exception) -> ServiceError:
        text = str(exc)
        if server.port and ("already allocated" in text or "address already in use" in text):
            return ServiceError(
                f"{server.name}: port {server.port} is already in use on this machine; stop"
                " what uses it, or drop `port` so testfleet picks a free one"
            )
        return ServiceError(f"{server.name}: the container did not start: {text[:300]}")

    def _remove_named(self, container: DockerContainer) -> None:
        with contextlib.suppress(Exception):
            name = container._name
            self.client.containers.get(name).remove(force=True, v=True)

    def stop_all(self) -> None:
        with self._lock:
            self._closed = True
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.stop()
        # Also what a handle never came back for (a start cut short by Ctrl-C).
        remove_run_containers(self.run_dir.run_id, client=self.client)
        with contextlib.suppress(Exception):
            self.client.close()


def remove_run_containers(run_id: str, *, client: Any = None) -> int:
    """Remove every container labelled with this run; returns how many there were."""
    try:
        client = client or _client()
        found = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    except Exception:
        return 0
    for container in found:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
    return len(found)


def remove_orphans(client: Any) -> int:
    """Remove this user's containers whose run directory is gone (a run killed, its
    directory wiped by a reboot of /dev/shm): no run can ever stop them."""
    try:
        found = client.containers.list(all=True, filters={"label": f"{LABEL_UID}={os.getuid()}"})
    except Exception:
        return 0
    removed = 0
    for container in found:
        run_dir = container.labels.get(LABEL_RUN_DIR)
        if run_dir and not Path(run_dir).exists():
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
                removed += 1
    return removed


def remove_for_run_dir(path: Path) -> int:
    """Cleanup for a run directory of a run that is gone: its containers, when it made any."""
    marker = path / MARKER
    if not marker.is_file() or marker.is_symlink():
        return 0
    try:
        run_id = marker.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return 0
    return remove_run_containers(run_id) if run_id else 0
