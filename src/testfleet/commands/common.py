"""Steps that several commands share: the project as a command sees it, where its runs live,
and bringing a stack up."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from testfleet.commands import Call
from testfleet.console import say
from testfleet.options import options_of
from testfleet.project import Project, load_project
from testfleet.runtime import Run
from testfleet.stack import LaneProvider, LaneSetup, in_parallel
from testfleet.up.shared_stack import SharedStack


def project_for(call: Call, command: str, extra: Mapping[str, Any] | None = None) -> Project:
    """The project's config as `command` sees it: pyproject.toml < the TESTFLEET_* env vars <
    the flags it takes (`extra`: more of the command line, pytest's arguments). Every command
    sees the env vars of every option: one shell, one configuration."""
    flags = {option.key: getattr(call.args, option.dest, None) for option in options_of(command)}
    return load_project(Path(call.args.project), cli={**flags, **(extra or {})}, environ=os.environ)


def run_base(project: Project) -> Path | None:
    """Where the run's directory goes (None: the default, /dev/shm when present)."""
    return project.path(project.config.run_dir) if project.config.run_dir else None


def logs_dir(project: Project) -> Path:
    """Where the logs of failed services are kept, after the run's directory is gone."""
    return project.root / ".testfleet" / "logs"


def start_stack(project: Project, run: Run, stack: LaneProvider, lanes: int) -> list[LaneSetup]:
    """Start the stack and provision every lane (in parallel); say how long it took."""
    began = time.perf_counter()
    stack.start()
    setups = in_parallel([partial(stack.provision, n) for n in range(1, lanes + 1)])
    names = ", ".join(project.config.services) or "no services"
    what = "lanes" if isinstance(stack, SharedStack) else "stack"
    whence = ", from the running `testfleet up`" if isinstance(stack, SharedStack) else ""
    say(
        f"{what} ready in {time.perf_counter() - began:.2f} s ({names}, {lanes} lane(s){whence});"
        f" run {run.run_dir.run_id}"
    )
    return setups
