"""`testfleet prune`: remove what no run uses now: the containers kept by `reuse = true` (when
a Docker engine answers) and what runs that are gone left in the run-dir base. Whose kept
containers (this project's; every project's with --all) → kept containers → gone runs → one
line saying what was removed and what was skipped, and why."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Literal

from testfleet import reaper
from testfleet.commands import Call
from testfleet.commands.common import project_for
from testfleet.errors import ConfigError, ExitCode, TestfleetError
from testfleet.files import unsafe_reason
from testfleet.project import find_pyproject
from testfleet.rundir import default_base, disk_base

# Said when there is no project to scope to: pruning every project's takes asking for it.
NO_PROJECT = "kept containers: skipped, no project here (--all removes every project's)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """It asks the engine testcontainers is set up for, and looks in the run-dir base runs use
    (TESTFLEET_RUN_DIR or the project's run-dir, else the default ones)."""
    parser.add_argument(
        "--all",
        action="store_true",
        help="remove the kept containers of every project of yours on this machine, not only"
        " this project's (another project's running tests keep the ones they hold)",
    )


def main(call: Call) -> int:
    owner = whose(call)
    containers = kept_containers(owner) if owner is not None else NO_PROJECT
    runs = gone_runs(bases(call))
    print(f"{containers}; {runs}")
    return ExitCode.OK


def whose(call: Call) -> Path | Literal["all"] | None:
    """Whose kept containers go: the project's directory (where its pyproject.toml is, as runs
    label them; a config that does not validate is still that project's), "all" for --all,
    None when there is no project here."""
    if call.args.all:
        return "all"
    try:
        return find_pyproject(Path(call.args.project).resolve()).parent
    except ConfigError:
        return None


def kept_containers(owner: Path | Literal["all"]) -> str:
    """Remove the kept containers of `owner` that no run holds; what was done, or why nothing
    was. No engine (or no docker extra) means no containers of ours to remove: said, not an
    error."""
    try:
        from testfleet.backends.docker_engine import prune_reused
    except ImportError:
        return "kept containers: skipped, the docker backend is not installed"
    try:
        removed = prune_reused(None if owner == "all" else owner)
    except ImportError:
        return "kept containers: skipped, the docker backend is not installed"
    except TestfleetError as exc:
        engine = exc.message.split(";", 1)[0]
        return f"kept containers: skipped, {engine}"
    names = f" ({', '.join(removed)})" if removed else ""
    of = "of every project" if owner == "all" else f"of {owner}"
    return f"removed {len(removed)} kept container(s) {of}{names}"


def bases(call: Call) -> list[Path]:
    """Where runs put their directories: the configured run-dir when there is one (as runs
    see it: the project's, TESTFLEET_RUN_DIR over it), else the tmpfs and disk defaults."""
    chosen: Path | None = None
    try:
        project = project_for(call, "prune")
        if project.config.run_dir:
            chosen = project.path(project.config.run_dir)
    except ConfigError:  # no project here, or not a valid one: the env var still counts
        if os.environ.get("TESTFLEET_RUN_DIR"):
            chosen = Path(os.environ["TESTFLEET_RUN_DIR"]).resolve()
    return [chosen] if chosen is not None else list(dict.fromkeys([default_base(), disk_base()]))


def gone_runs(places: list[Path]) -> str:
    """Stop what runs whose owner is gone left and remove their directories, as the next run
    would; a base that is missing or not safely this user's is left alone."""
    removed = 0
    looked = []
    for base in places:
        if not base.is_dir() or unsafe_reason(base) is not None:
            continue
        looked.append(str(base))
        removed += len(reaper.cleanup_stale(base))
    where = f" under {', '.join(looked)}" if looked else " (no run-dir base here)"
    return f"removed {removed} {'directory' if removed == 1 else 'directories'} of gone runs{where}"
