"""How many lanes a run gets: the `lanes` setting, `auto` resolved against the machine and
the services' limits, and, for a run of a few files, no more than their measured time is
worth, nor than they have units to hand out."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

from testfleet import durations, pytest_cache
from testfleet.config import Config
from testfleet.kinds import KINDS
from testfleet.project import Project
from testfleet.values import MAX_LANES


def resolve_lanes(config: Config, cpus: int | None = None) -> int:
    """`auto`: one lane per core for a suite without services (CPU-bound); two per core with
    services, because integration tests mostly wait on their services, and a waiting lane
    leaves its core to another. Never more than the services allow: one lane when a server
    per lane must take a fixed port, 16 with Valkey DB numbers, 64 in all."""
    if config.lanes != "auto":
        return config.lanes
    cores = cpus or os.cpu_count() or 1
    # Per Python version: every version of a matrix runs this many lanes on the one stack.
    versions = config.versions
    lanes = max(min(cores * 2 if config.services else cores, MAX_LANES) // versions, 1)
    for spec in config.services.values():
        # A fixed port in every lane needs a namespace per lane; without, one lane.
        if spec.port_number is not None and spec.runs_per_lane() and config.network != "namespace":
            return 1
        slots = KINDS[spec.kind].slots_for(spec)
        if slots is not None:
            lanes = min(lanes, max(slots.count // versions, 1))
        if spec.isolation_mode == "none":
            return 1
    return lanes


# With lanes = "auto", a lane is started for every this much measured test time a selection
# has: a lane's start-up (an interpreter, the suite's imports, collection) costs about a second.
LANE_WORTH_SECONDS = 2.0


def lanes_for_selection(
    project: Project, lanes: int, selection: Sequence[str], *, last_failed: bool
) -> int:
    """`lanes = "auto"` for a run of a few files, node ids or the last failures: no more lanes
    than their measured time is worth. Unchanged when the selection's time is not known."""
    if project.config.lanes != "auto" or lanes == 1:
        return lanes
    measured = durations.load(project.path(project.config.durations), project.root)
    if last_failed:
        wanted = list(pytest_cache.lastfailed(project))
        chosen = [measured.get(n) for n in wanted]
        if not wanted or None in chosen:
            return lanes
        seconds = sum(t for t in chosen if t is not None)
    elif selection:
        seconds = 0.0
        for item in selection:
            key = _relative(project, item)
            found = [
                t
                for n, t in measured.items()
                if n == key or n.startswith((f"{key}::", f"{key.rstrip('/')}/"))
            ]
            if not found:
                return lanes
            seconds += sum(found)
    else:
        return lanes
    return max(1, min(lanes, math.ceil(seconds / LANE_WORTH_SECONDS)))


def lanes_for_units(project: Project, lanes: int, selection: Sequence[str]) -> int:
    """No more lanes than the selection has units to hand out: a lane beyond them would
    start, get its services and collect, only to find the queue empty. Known before
    anything starts (lanes start before the suite is collected, see early.py) only where
    the selection says it for certain: with `group-by = "module"`, files and node ids name
    at most one unit per file. A directory, another grouping or another path among pytest's
    arguments leaves `lanes` as it is."""
    if lanes == 1 or not selection or project.config.group_by != "module":
        return lanes
    files = set()
    for item in selection:
        path = _relative(project, item).partition("::")[0]
        if not path or not _exists(project.root / path, file=True):
            return lanes
        files.add(path)
    # Any other path pytest is given (pytest-args, after `--`) adds its tests.
    others = [a for a in project.config.pytest_args if a not in selection]
    if any(not a.startswith("-") and _exists(project.root / a) for a in others):
        return lanes
    return min(lanes, len(files))


def _exists(path: Path, *, file: bool = False) -> bool:
    """Whether an argument names a path (a file), whatever it holds (a NUL, a long name)."""
    try:
        return path.is_file() if file else path.exists()
    except (OSError, ValueError):
        return False


def _relative(project: Project, item: str) -> str:
    """A path or node id as pytest's node ids spell it: relative to the project root."""
    path, sep, rest = item.partition("::")
    candidate = Path(path)
    if candidate.is_absolute():
        with contextlib.suppress(ValueError):
            path = str(candidate.relative_to(project.root))
    return (os.path.normpath(path) if path else path) + sep + rest
