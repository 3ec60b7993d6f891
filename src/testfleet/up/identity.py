"""What a `testfleet up` and a `testfleet run` agree on before the run uses the up's stack.

The stack's identity is the part of the config that decides what the services are (the
project, its services, the `env` table, the backend and network): two configs with the same
identity make equivalent stacks, whatever their lanes, pytest arguments or reports. The up
publishes its identity and socket in a descriptor file beside its env file; a run whose
identity differs names the settings that differ and starts its own stack.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from testfleet.kinds import KINDS
from testfleet.project import Project

# What `up` and `run` speak over the up's socket (up/server.py); a run of another version is
# refused rather than misunderstood.
PROTOCOL_VERSION = 1


def identity(project: Project) -> dict[str, Any]:
    config = project.config
    return {
        "project": str(project.root),
        "services": {
            name: spec.model_dump(mode="json", by_alias=True, exclude_none=True)
            for name, spec in config.services.items()
        },
        "env": dict(config.env),
        "backend": config.backend,
        "network": config.network,
    }


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The settings that differ, as dotted names: `services.valkey.isolation`, `env.MODE`."""
    found: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
        elif a != b:
            found.append(where)

    walk(ours, theirs, "")
    return found


def not_shareable(project: Project) -> str | None:
    """Why a run can never use an up's stack for this config, or None."""
    config = project.config
    if config.network == "namespace":
        return 'network = "namespace" gives every lane its own network, which `up` does not run'
    for name, spec in config.services.items():
        if spec.isolation_mode in KINDS[spec.kind].unrecycled:
            return (
                f'services.{name} has isolation = "{spec.isolation_mode}", whose lanes a running'
                " `up` cannot hand out again"
            )
    return None


def descriptor_path(project: Project) -> Path:
    """Beside the env file: one `up` per env file, so one descriptor too."""
    dotenv = project.path(project.config.dotenv)
    return dotenv.with_name(f".{dotenv.name}.up.json")


def read_descriptor(path: Path) -> dict[str, Any] | None:
    """The up's descriptor when this user wrote it (never through a link), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != os.getuid():
            return None
        with os.fdopen(fd, "rb", closefd=False) as stream:
            document = json.loads(stream.read())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return document if isinstance(document, dict) else None
