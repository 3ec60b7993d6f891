"""The project's own pytest cache, seen across runs: `--lf` / `--ff` work with lanes.

Lanes each keep a private cache (suites keep state there that a second process would
corrupt). Before a run every lane starts from the project's `lastfailed`; after it, the run's
outcomes are merged back the way pytest itself updates it: passed tests leave the list, failed
ones join it, tests that did not run keep what they had.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from testfleet.files import write_atomic
from testfleet.project import Project
from testfleet.results import TestResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

LASTFAILED = Path("v") / "cache" / "lastfailed"


def project_cache_dir(project: Project) -> Path:
    """pytest's cache_dir for the project: `[tool.pytest.ini_options] cache_dir`, else
    `.pytest_cache`, relative to the project root."""
    configured = ".pytest_cache"
    try:
        document = tomllib.loads((project.root / "pyproject.toml").read_text(encoding="utf-8"))
        value = document.get("tool", {}).get("pytest", {}).get("ini_options", {}).get("cache_dir")
        if isinstance(value, str) and value:
            configured = value
    except (OSError, ValueError):
        pass
    return project.root / configured


def _read(path: Path) -> dict[str, bool]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): True for k in data} if isinstance(data, dict) else {}


def lastfailed(project: Project) -> dict[str, bool]:
    """The project's failures of earlier runs, as pytest's cache keeps them."""
    return _read(project_cache_dir(project) / LASTFAILED)


def seed_lastfailed(project: Project, lane_cache: Path) -> None:
    failed = lastfailed(project)
    if not failed:
        return
    target = lane_cache / LASTFAILED
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(failed, sort_keys=True), encoding="utf-8")


def merge_lastfailed(
    project: Project, results: Iterable[TestResult], collect_errors: Mapping[str, str]
) -> None:
    path = project_cache_dir(project) / LASTFAILED
    failed = _read(path)
    for result in results:
        if result.outcome == "not run":
            continue
        if result.failing:
            failed[result.nodeid] = True
        else:
            failed.pop(result.nodeid, None)
    failed.update({nodeid: True for nodeid in collect_errors})
    # A read-only checkout: --lf is a convenience, the run's results stand.
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps(failed, indent=2, sort_keys=True).encode("utf-8"))
