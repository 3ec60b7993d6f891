"""The suite's test ids, collected in the target interpreter without services, as the lane
plugin reports them (pytest's terminal output changes with -q, -vv and plugins)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testfleet.envvars import placeholder_values, process_environ
from testfleet.errors import ConfigError
from testfleet.kinds import KINDS
from testfleet.lanes.launch import link_package, on_pythonpath
from testfleet.placeholders import expand
from testfleet.project import Project
from testfleet.specs import TABLE


def planning_args(project: Project) -> list[str]:
    """pytest-args with placeholders filled as lane 1 would see them, from each service's
    typical values (nothing is started to plan): `--redis-url={valkey.url}` must still parse."""
    config = project.config
    views = {name: KINDS[spec.kind].planned(spec) for name, spec in config.services.items()}
    common = {
        "lane": "1",
        "lanes": "1",
        "run_id": "plan",
        "run_dir": str(project.root / ".testfleet"),
        "project_dir": str(project.root),
    }
    values = placeholder_values(None, views, common)
    return [expand(a, values, where=f"{TABLE}.pytest-args") for a in config.pytest_args]


def collected(project: Project, python: str, args: Sequence[str]) -> tuple[int, str, Any]:
    """pytest's collection in `python` without services, as the lane plugin reports it:
    (exit code, its output, the plugin's report or None)."""
    with tempfile.TemporaryDirectory(prefix="testfleet-collect-") as folder:
        target = Path(folder) / "collected.json"
        argv = [python, "-m", "pytest", "--collect-only", "-q", "-p", "testfleet.worker.plugin"]
        argv += ["-p", "no:cacheprovider", *args]
        env = on_pythonpath(process_environ(python), link_package(Path(folder)))
        env["TESTFLEET_COLLECT_FILE"] = str(target)
        env.pop("TESTFLEET_QUEUE", None)
        result = subprocess.run(
            argv, cwd=project.root, env=env, capture_output=True, text=True, check=False
        )
        try:
            report = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            report = None
    return result.returncode, result.stdout + result.stderr, report


def collect(project: Project, python: str | None = None) -> list[str]:
    """The suite's test ids, collected in the target interpreter without any services, as
    the lane plugin reports them (pytest's terminal output changes with -q, -vv, plugins)."""
    code, output, report = collected(project, python or project.python, planning_args(project))
    if code not in (0, 5) or report is None or report["errors"]:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ConfigError(
            f"collecting tests failed with exit code {code}; `testfleet plan`"
            " collects without services, so modules that need them at import time fail here",
            details=tail,
        )
    return list(report["nodeids"])
