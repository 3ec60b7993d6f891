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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from testfleet.backends.base import ContainerLaunch, Handle, Server, Started
from testfleet.backends.docker_engine import (
    LABEL_HOST,
    LABEL_RUN,
    LABEL_RUN_DIR,
    LABEL_UID,
    connect,
    docker_host,
    engine_error,
    engine_reason,
    hold_slot,
    host_key,
    kept_labels,
    remove_orphans,
    remove_run_containers,
    reuse_dir,
    reuse_key,
)
from testfleet.errors import ConfigError, ServiceError
from testfleet.files import (
    PRIVATE_DIR,
    write_private,
)
from testfleet.processes import REDACTED
from testfleet.rundir import CONTAINERS_MARKER as MARKER
from testfleet.rundir import RunDir

if TYPE_CHECKING:
    from docker.models.containers import Container
    from testcontainers.core.container import DockerContainer

HOST = "127.0.0.1"
DEAD_CHECK_SECONDS = 1.0
REUSE_SLOTS = 64  # kept containers of one description: one per lane of the busiest run


class ContainerHandle:
    """A running container, seen the way readiness and teardown see a process."""

    def __init__(
        self,
        name: str,
        container: Container,
        keep_dir: Path | None,
        claim: int | None = None,
        redact: Sequence[str] = (),
    ) -> None:
        self.name = name
        self._redact = list(redact)
        self.wrapped = container
        self._keep_dir = keep_dir
        self._kept: Path | None = None
        self._stopped = False
        # A reused container's slot lock: held while this run uses it, released at stop.
        self._claim = claim

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
            text: str = self.wrapped.logs().decode(errors="replace")
        except Exception:
            return ""
        # A dev server's banner prints its root token; kept logs get uploaded by CI jobs.
        for secret in self._redact:
            if secret:
                text = text.replace(secret, REDACTED)
        return text

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
        if self._claim is not None:
            # Kept for the next run: only this run's hold on it ends.
            os.close(self._claim)
            self._claim = None
            return
        with contextlib.suppress(Exception):  # already gone
            self.wrapped.remove(force=True, v=True)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def hold(self, claim: int) -> None:
        """Keep the container after this run, holding its slot's lock until then."""
        self._claim = claim

    def discard(self) -> None:
        """Remove it even when it was to be kept: it did not become ready."""
        claim, self._claim = self._claim, None
        self.stop()
        if claim is not None:
            os.close(claim)


class DockerBackend:
    """Runs `Server.container` launches; `stop_all` removes every container of the run."""

    name = "docker"

    def __init__(self, run_dir: RunDir, keep_dir: Path | None, project: Path) -> None:
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
        self.project = project  # whose kept containers (`reuse = true`) this run makes
        self.client = connect(docker_host())
        self._handles: list[ContainerHandle] = []
        self._checked = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self.host = docker_host()
        # What cleanup needs after a SIGKILL: which run, on which engine.
        write_private(run_dir.path / MARKER, f"{run_dir.run_id}\n{self.host or ''}\n")
        remove_orphans(self.client)

    def labels(self) -> dict[str, str]:
        return {
            LABEL_RUN: self.run_dir.run_id,
            LABEL_RUN_DIR: str(self.run_dir.path),
            LABEL_UID: str(os.getuid()),
            LABEL_HOST: host_key(),
        }

    def start(self, server: Server) -> Started:
        from testfleet.readiness import wait_ready

        launch = server.container
        if launch is None:
            raise ServiceError(f"{server.name}: this kind has no container image")
        image_id = self._check_image(server.name, launch.image)
        with self._lock:
            if self._closed:
                raise ServiceError(f"{server.name}: not started, the run is stopping")
        if launch.reuse:
            handle, reused = self._claim_reused(server, launch, image_id)
        else:
            handle, reused = self._create(server, launch, self.labels()), False
        with self._lock:
            self._handles.append(handle)
            closed = self._closed
        if closed:  # teardown ran while the engine was starting it
            handle.stop()
            raise ServiceError(f"{server.name}: not started, the run is stopping")
        port = self._published_port(handle, launch.inner_port)
        try:
            probe = server.probe(Started(handle, HOST, port))
            wait_ready(handle, probe, timeout=server.timeout, what=server.name)
            if reused and server.reset is not None:
                server.reset(HOST, port)
        except BaseException:
            handle.discard()
            raise
        return Started(handle, HOST, port)

    def _create(
        self, server: Server, launch: ContainerLaunch, labels: dict[str, str], name: str = ""
    ) -> ContainerHandle:
        container = self._describe(server, launch, labels, name)
        try:
            container.start()
        except Exception as exc:
            # A container created but not started still carries our labels: remove it now.
            self._remove_named(container)
            raise self._start_error(server, exc) from None
        return ContainerHandle(
            server.name, container.get_wrapped_container(), self.keep_dir, redact=launch.redact
        )

    def _claim_reused(
        self, server: Server, launch: ContainerLaunch, image_id: str
    ) -> tuple[ContainerHandle, bool]:
        """A kept container with this exact description that no live run holds, or a new one
        kept from now on. Each is a slot with a lock file: a run holds its slots' locks until
        it ends (or dies, when the kernel drops them), so two runs never share one."""
        key = reuse_key(launch, image_id, server.port, self.project)
        folder = reuse_dir()
        for slot in range(REUSE_SLOTS):
            fd = hold_slot(folder, key, slot)
            if fd is None:
                continue
            name = f"testfleet-reuse-{os.getuid()}-{key}-{slot}"
            try:
                found = self._find(name)
                if found is not None and found.status == "running":
                    handle = ContainerHandle(
                        server.name, found, self.keep_dir, claim=fd, redact=launch.redact
                    )
                    return handle, True
                if found is not None:  # stopped or broken: start it afresh
                    with contextlib.suppress(Exception):
                        found.remove(force=True, v=True)
                handle = self._create(server, launch, kept_labels(key, self.project), name)
            except BaseException:
                os.close(fd)
                raise
            handle.hold(fd)
            return handle, False
        raise ServiceError(
            f"{server.name}: all {REUSE_SLOTS} kept containers of this description are in use"
        )

    def _find(self, name: str) -> Container | None:
        import docker.errors

        try:
            found: Container = self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        return found

    def _check_image(self, name: str, image: str) -> str:
        """The image's id, pulling it when the engine lacks it."""
        import docker.errors

        from testfleet.images.recipes import build_hint

        try:
            return str(self.client.images.get(image).id)
        except docker.errors.ImageNotFound:
            try:
                return str(self.client.images.pull(image).id)
            except Exception as exc:
                # The engine's reason, whole, under the one line: a registry's answer is long
                # and its point (no route, no such repository, denied) is at its end.
                raise ServiceError(
                    f"{name}: image {image} is not on this engine and could not be pulled;"
                    f" {build_hint(image)}",
                    details=f"the engine said: {engine_reason(exc)}",
                ) from None
        except Exception as exc:
            raise engine_error(exc) from None

    def _describe(
        self, server: Server, launch: ContainerLaunch, labels: dict[str, str], name: str
    ) -> DockerContainer:
        from testcontainers.core.container import DockerContainer

        slug = re.sub(r"[^a-z0-9_.-]+", "-", server.name.lower()).strip("-")
        container = DockerContainer(launch.image)
        container.with_name(name or f"testfleet-{self.run_dir.run_id}-{slug}")
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
        extra: dict[str, Any] = {"labels": labels}
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
        return ServiceError(f"{server.name}: the container did not start: {engine_reason(exc)}")

    def _remove_named(self, container: DockerContainer) -> None:
        with contextlib.suppress(Exception):
            name = container._name
            self.client.containers.get(name).remove(force=True, v=True)

    def handles(self) -> list[Handle]:
        with self._lock:
            return list(self._handles)

    def dead(self) -> list[Handle]:
        """Containers that exited (a crash, the OOM killer) while the run used them. Asked of
        the engine at most every DEAD_CHECK_SECONDS: the run's loop calls this often."""
        now = time.monotonic()
        if now - self._checked < DEAD_CHECK_SECONDS:
            return []
        self._checked = now
        with self._lock:
            handles = [h for h in self._handles if not h.stopped]
        # Stopped on purpose meanwhile (a lane being recycled): not dead.
        return [h for h in handles if h.exit_code() is not None and not h.stopped]

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
