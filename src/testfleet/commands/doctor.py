"""`testfleet doctor`: which backends, binaries and interpreters this machine has."""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from testfleet.commands import Call
from testfleet.commands.common import project_for
from testfleet.errors import ConfigError, TestfleetError
from testfleet.kinds import KINDS
from testfleet.processes import unprivileged_user
from testfleet.project import Project
from testfleet.rundir import default_base
from testfleet.specs import ServerSpec


def _run(argv: list[str], timeout: float = 5) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _docker() -> tuple[str, Any]:
    """Whether the docker backend works here, and a client of its engine (None without one):
    asked the way runs ask (testcontainers' choice of engine), not through the docker CLI,
    which may be set to another context."""
    try:
        import testcontainers  # noqa: F401

        from testfleet.backends.docker_engine import connect
    except ImportError:
        return "backend not installed (pip install 'testfleet[docker]')", None
    try:
        client = connect()
    except TestfleetError as exc:
        return f"engine not reachable: {exc.message}", None
    try:
        return f"engine {client.version().get('Version', '?')}", client
    except Exception as exc:  # the engine went away between the ping and the question
        from testfleet.backends.docker_engine import engine_error

        client.close()
        return f"engine not reachable: {engine_error(exc).message}", None


def _image(client: Any, image: str) -> tuple[bool, str]:
    """Whether the engine holds the image a docker service would run, and what to say of it.
    Nothing is pulled: where no registry answers, a missing image is found here, not in the
    middle of a run."""
    from testfleet.backends.docker_engine import engine_error, image_present
    from testfleet.images.recipes import build_hint

    try:
        present = image_present(client, image)
    except Exception as exc:
        return False, f"image {image} not checked: {engine_error(exc).message}"
    if present:
        return True, f"image {image} present"
    return False, f"image {image} not present; {build_hint(image)}"


def _interpreters() -> list[str]:
    """The interpreters a `python = [...]` matrix can use, found the way runs find them."""
    from testfleet.venvs import installed_pythons

    return [f"{version} ({path})" for version, path in installed_pythons().items()]


def _uv() -> str:
    from testfleet.venvs import find_uv

    try:
        found = find_uv()
    except ConfigError:
        return "not found (pip install uv); needed for python = [versions]"
    return f"{_run([str(found), '--version']) or 'unusable'}  {found}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: it looks at this machine (and the project's services, when it has a valid
    config)."""


def main(call: Call) -> int:
    try:
        project: Project | None = project_for(call, "doctor")
    except ConfigError:
        project = None
    return doctor(project)


def doctor(project: Project | None) -> int:
    docker, client = _docker()
    try:
        return _report(project, docker, client)
    finally:
        if client is not None:
            client.close()


def _report(project: Project | None, docker: str, client: Any) -> int:
    rows: list[tuple[str, str]] = []
    missing_configured = False
    configured = project.config.services if project else {}
    for kind in KINDS.values():
        if kind.lookup is None:
            continue
        try:
            binary = kind.binary()
            native = f"native {binary.version()}  {binary.path}  ({binary.source})"
        except ConfigError as exc:
            native = f"native missing: {exc.message.split(': ', 1)[1]}"
        if client is None or not kind.image:
            docker_state = f"docker needs an engine (image {kind.image})"
        else:
            present = _image(client, kind.image)[0]
            docker_state = f"docker ready (image {kind.image}{'' if present else ' not present'})"
        rows.append((kind.name, f"{native}; {docker_state}; external"))
    for name, spec in configured.items():
        if not isinstance(spec, ServerSpec) or spec.backend_name != "native":
            continue
        try:
            KINDS[spec.kind].binary(spec.binary, where=f"tool.testfleet.services.{name}")
        except TestfleetError as exc:
            missing_configured = True
            rows.append((f"{name} (configured)", f"missing: {exc.message}"))
    for name, spec in configured.items():
        if not isinstance(spec, ServerSpec) or spec.backend_name != "docker":
            continue
        image = spec.image or KINDS[spec.kind].image or ""
        if client is None:
            missing_configured = True
            rows.append((f"{name} (configured)", "runs in docker, and no engine answers"))
            continue
        present, state = _image(client, image)
        missing_configured = missing_configured or not present
        rows.append((f"{name} (configured)", f"runs in docker: {state}"))
    rows.append(("docker", docker))
    rows.append(("uv", _uv()))
    rows.append(("pythons", ", ".join(_interpreters()) or "none found"))
    base = default_base()
    tmpfs = str(base).startswith("/dev/shm")
    rows.append(("run dir", f"{base} ({'tmpfs' if tmpfs else 'disk'})"))
    run_as = unprivileged_user()
    if run_as is not None:
        rows.append(("root", f"PostgreSQL will run as '{run_as.name}' (uid {run_as.uid})"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
    return 1 if missing_configured else 0
