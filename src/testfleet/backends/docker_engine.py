"""The Docker engine as testfleet uses it beside one run's backend: finding and asking it
(through testcontainers' choice of engine), the labels every container of ours carries, the
slots of containers kept between runs (`reuse = true`), and removing what runs left."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from testfleet.backends.base import ContainerLaunch
from testfleet.errors import ServiceError
from testfleet.files import TRAVERSABLE_DIR, machine_dir, private_dir, secure_dir
from testfleet.rundir import CONTAINERS_MARKER as MARKER

LABEL_RUN = "testfleet.run"
LABEL_RUN_DIR = "testfleet.run-dir"
LABEL_UID = "testfleet.uid"
LABEL_REUSE = "testfleet.reuse"
# Which machine (or CI job container) made it: run directories are only meaningful there.
LABEL_HOST = "testfleet.host"
# A kept container's project directory: `testfleet prune` removes one project's kept
# containers, never those of another project (another checkout) whose tests run now.
LABEL_PROJECT = "testfleet.project"


def engine_reason(exc: Exception) -> str:
    """What the engine said of a failed request, whole: its own explanation when it gave one
    (not the HTTP status line and URL docker-py puts before it)."""
    explanation = getattr(exc, "explanation", None)
    text = explanation if isinstance(explanation, str) and explanation.strip() else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def image_present(client: Any, image: str) -> bool:
    """Whether the engine holds `image` now (nothing is pulled)."""
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def engine_error(exc: Exception) -> ServiceError:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return ServiceError(
        f"no Docker engine answers at {host} ({type(exc).__name__}); start dockerd (or"
        ' Docker Desktop), or run the service with backend = "native"'
    )


def docker_host() -> str | None:
    """The engine testcontainers talks to (its properties file, DOCKER_HOST, the docker
    context): ours too, so cleanup asks the engine that holds the containers."""
    from testcontainers.core.docker_client import get_docker_host

    return get_docker_host()


def _unix_socket(host: str | None) -> str | None:
    """The socket's path of a unix:// engine address (the default one when none is set)."""
    address = host or "unix:///var/run/docker.sock"
    return address[len("unix://") :] if address.startswith("unix://") else None


def connect(host: str | None = None) -> Any:
    import docker

    client = None
    try:
        host = host or docker_host()
        socket_path = _unix_socket(host or os.environ.get("DOCKER_HOST"))
        if socket_path is not None and not os.path.exists(socket_path):
            # Asked anyway, docker-py would leave the socket of its failed first request open.
            raise FileNotFoundError(f"no socket at {socket_path}")
        client = docker.DockerClient(base_url=host, timeout=30) if host else docker.from_env()
        client.ping()
    except Exception as exc:  # docker raises DockerException, requests' errors, OSError
        if client is not None:  # its connection pool holds a socket until closed
            with contextlib.suppress(Exception):
                client.close()
        raise engine_error(exc) from None
    return client


def host_key() -> str:
    """This machine as an engine shared by several (CI jobs in their own containers on one
    host's engine, a remote DOCKER_HOST) cannot tell: its name and the kernel's boot id."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def reuse_dir() -> Path:
    """This user's slot locks of kept containers: on disk, private."""
    base = secure_dir(machine_dir(), TRAVERSABLE_DIR, what="testfleet's machine directory")
    return private_dir(base / "reuse")


def hold_slot(folder: Path, key: str, slot: object) -> int | None:
    """The lock of a kept container's slot, held (its fd), or None when a run holds it."""
    fd = os.open(folder / f"{key}-{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def reuse_key(launch: ContainerLaunch, image_id: str, port: int | None, project: Path) -> str:
    """Everything that makes a container what it is: a change in any of it (a new image
    build, another setting) is another key, so a kept container always matches its config.
    The project too: a kept container is one project's (its credentials are already), so
    pruning one project never takes a container another project's runs were reusing."""
    described = {
        "image": image_id,
        "command": list(launch.command),
        "env": dict(sorted(launch.env.items())),
        "files": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(launch.files.items())},
        "tmpfs": dict(sorted(launch.tmpfs.items())),
        "limits": launch.limits.model_dump() if launch.limits else None,
        "inner_port": launch.inner_port,
        "port": port,
        # Machines sharing an engine keep containers of their own: slot locks are per machine.
        "host": host_key(),
        "project": str(project),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def kept_labels(key: str, project: Path) -> dict[str, str]:
    """A kept container's labels: no run's (it outlives runs) but this user's, this machine's,
    its description's (`key`) and its project's."""
    return {
        LABEL_UID: str(os.getuid()),
        LABEL_HOST: host_key(),
        LABEL_REUSE: key,
        LABEL_PROJECT: str(project),
    }


def prune_reused(project: Path | None = None, client: Any = None) -> list[str]:
    """Remove this user's kept containers on this machine that no live run holds; their names.

    `project`: only that project's (the directory of its pyproject.toml, as runs label them).
    None: every project's, and those kept before containers named their project."""
    own = client is None
    client = client or connect()
    try:
        labels = [f"{LABEL_UID}={os.getuid()}", f"{LABEL_HOST}={host_key()}", LABEL_REUSE]
        found = client.containers.list(all=True, filters={"label": labels})
        removed = []
        folder = reuse_dir()
        for container in found:
            if project is not None and container.labels.get(LABEL_PROJECT) != str(project):
                continue
            slot = container.name.rsplit("-", 1)[-1]
            fd = hold_slot(folder, container.labels[LABEL_REUSE], slot)
            if fd is None:
                continue  # a run uses it now
            try:
                container.remove(force=True, v=True)
                removed.append(container.name)
            finally:
                os.close(fd)
        return removed
    finally:
        if own:  # its connection pool holds a socket until closed
            with contextlib.suppress(Exception):
                client.close()


def remove_run_containers(run_id: str, *, client: Any = None, host: str | None = None) -> int:
    """Remove every container labelled with this run; returns how many there were."""
    try:
        client = client or connect(host)
        found = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    except Exception:
        return 0
    for container in found:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
    return len(found)


def remove_orphans(client: Any) -> int:
    """Remove this user's containers, made on this machine, whose run directory is gone (a
    run killed, its directory wiped with /dev/shm): no run can ever stop them. Containers of
    other machines sharing the engine are theirs to clean."""
    labels = [f"{LABEL_UID}={os.getuid()}", f"{LABEL_HOST}={host_key()}"]
    try:
        found = client.containers.list(all=True, filters={"label": labels})
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
        run_id, _, host = marker.read_text(encoding="ascii").partition("\n")
    except (OSError, UnicodeDecodeError):
        return 0
    run_id, host = run_id.strip(), host.strip()
    return remove_run_containers(run_id, host=host or None) if run_id else 0
