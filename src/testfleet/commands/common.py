"""Steps that several commands share: the project as a command sees it, where its runs live,
and bringing a stack up."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from testfleet import space
from testfleet.commands import Call
from testfleet.console import say
from testfleet.errors import ConfigError
from testfleet.lanes.count import resolve_lanes
from testfleet.options import options_of
from testfleet.project import Project, load_project
from testfleet.rundir import default_base, disk_base
from testfleet.runtime import Run
from testfleet.stack import LaneProvider, LaneSetup, in_parallel
from testfleet.up.identity import (
    descriptor_path,
    differences,
    identity,
    not_shareable,
    read_descriptor,
)
from testfleet.up.shared_stack import SharedStack


def project_for(call: Call, command: str, extra: Mapping[str, Any] | None = None) -> Project:
    """The project's config as `command` sees it: pyproject.toml < the TESTFLEET_* env vars <
    the flags it takes (`extra`: more of the command line, pytest's arguments). Every command
    sees the env vars of every option: one shell, one configuration."""
    flags = {option.key: getattr(call.args, option.dest, None) for option in options_of(command)}
    return load_project(Path(call.args.project), cli={**flags, **(extra or {})}, environ=os.environ)


def run_base(project: Project, lanes: int | None = None) -> Path:
    """Where the run's directory goes: the user's run-dir, else /dev/shm, or a directory on
    disk when /dev/shm has too little room for the run (said once; see space.py). `lanes`:
    every lane of the run, all Python versions together (by default, what `lanes` allows)."""
    config = project.config
    chosen = project.path(config.run_dir) if config.run_dir else None
    if chosen is None and _uses_running_up(project):
        return default_base()  # the up's stack holds the data; this run keeps only lane files
    count = lanes if lanes is not None else resolve_lanes(config) * config.versions
    need = space.estimate(config.services.values(), count)
    placement = space.place(need, count, chosen=chosen, tmpfs=default_base(), disk=disk_base())
    problem = space.socket_problem(placement.base, config.services)
    if problem is not None:
        raise ConfigError(problem)
    if placement.note is not None:
        say(placement.note)
    return placement.base


def _uses_running_up(project: Project) -> bool:
    """Whether a run will take its lanes from a running `up` of this project (whose own data
    is wherever that up put it): its descriptor is there and its stack is this config's."""
    if project.config.own_stack or not_shareable(project) is not None:
        return False
    document = read_descriptor(descriptor_path(project))
    return document is not None and not differences(identity(project), document.get("identity", {}))


def logs_dir(project: Project) -> Path:
    """Where the logs of failed services are kept, after the run's directory is gone."""
    return project.root / ".testfleet" / "logs"


def start_stack(
    project: Project, run: Run, stack: LaneProvider, lanes: int, *, python: str = ""
) -> list[LaneSetup]:
    """Start the stack and provision every lane (in parallel); say how long it took, and
    (`python`) which interpreter the lanes run."""
    began = time.perf_counter()
    try:
        stack.start()
        setups = in_parallel([partial(stack.provision, n) for n in range(1, lanes + 1)])
    except Exception as exc:
        # A run directory that filled up is the user's to fix, not an internal error (an up's
        # lanes are in the up's directory: its own error says so).
        if space.disk_full(exc) and not isinstance(stack, SharedStack):
            raise space.full_error(run.run_dir.path.parent, exc) from exc
        raise
    names = ", ".join(project.config.services) or "no services"
    what = "lanes" if isinstance(stack, SharedStack) else "stack"
    whence = ", from the running `testfleet up`" if isinstance(stack, SharedStack) else ""
    say(
        f"{what} ready in {time.perf_counter() - began:.2f} s ({names}, {lanes} lane(s){whence});"
        f"{f' {python};' if python else ''} run {run.run_dir.run_id}"
    )
    return setups
