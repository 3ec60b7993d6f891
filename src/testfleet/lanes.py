"""Lanes: how many, and how each one's pytest process is started.

A lane is a plain pytest process with the lane plugin (`-p testfleet.lane`), its own env
(the lane's services), and nothing writable shared with other lanes: its own pytest cache
directory, basetemp and TMPDIR.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from testfleet.config import Config, Project
from testfleet.coordinator import LaneLaunch
from testfleet.envvars import process_environ
from testfleet.errors import ConfigError
from testfleet.stack import LaneEnv, Stack


def resolve_lanes(config: Config, cpus: int | None = None) -> int:
    """`auto`: one lane per core for a suite without services (CPU-bound); two per core with
    services, because integration tests mostly wait on their services, and a waiting lane
    leaves its core to another."""
    if config.lanes != "auto":
        return config.lanes
    cores = cpus or os.cpu_count() or 1
    return cores * 2 if config.services else cores


def lane_dir(run_dir: Path, lane: int) -> Path:
    return run_dir / "lanes" / str(lane)


def lane_argv(project: Project, stack: Stack, lane: LaneEnv, run_dir: Path) -> list[str]:
    folder = lane_dir(run_dir, lane.lane)
    return [
        project.python,
        "-m",
        "pytest",
        "-p",
        "testfleet.lane",
        *stack.expand_args(project.config.pytest_args, lane),
        # Each lane its own cache and temp dirs: suites keep state in .pytest_cache that a
        # second process would corrupt.
        "-o",
        f"cache_dir={folder / 'pytest_cache'}",
        f"--basetemp={folder / 'basetemp'}",
    ]


def lane_environ(
    project: Project, lane: LaneEnv, run_dir: Path, socket_path: Path, coverage_dir: Path | None
) -> dict[str, str]:
    folder = lane_dir(run_dir, lane.lane)
    tmp = folder / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**process_environ(project.python), **lane.env}
    env.update({"TMPDIR": str(tmp), "TESTFLEET_QUEUE": str(socket_path)})
    if coverage_dir is not None:
        env["TESTFLEET_COVERAGE_FILE"] = str(coverage_dir / ".coverage")
    return env


def launch(
    project: Project,
    stack: Stack,
    lanes: Mapping[int, LaneEnv],
    run_dir: Path,
    *,
    socket_path: Path,
    coverage_dir: Path | None,
    interactive: bool,
) -> LaneLaunch:
    """One lane on a terminal prints straight to it (pytest's own output, `--pdb` works);
    otherwise every lane writes to its own log, and testfleet shows progress."""
    argv = {n: lane_argv(project, stack, env, run_dir) for n, env in lanes.items()}
    envs = {
        n: lane_environ(project, env, run_dir, socket_path, coverage_dir)
        for n, env in lanes.items()
    }
    single = len(lanes) == 1 and interactive

    def log_path(n: int) -> Path | None:
        return None if single else lane_dir(run_dir, n) / "output.log"

    return LaneLaunch(
        argv=lambda n: argv[n],
        env=lambda n: envs[n],
        log_path=log_path,
        cwd=project.root,
        foreground=single and sys.stdin.isatty(),
    )


def collect(project: Project) -> list[str]:
    """The suite's test ids, collected in the target interpreter, without any services."""
    argv = [
        project.python,
        "-m",
        "pytest",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        *project.config.pytest_args,
    ]
    result = subprocess.run(
        argv,
        cwd=project.root,
        env=process_environ(project.python),
        capture_output=True,
        text=True,
        check=False,
    )
    nodeids = [line for line in result.stdout.splitlines() if "::" in line and " " not in line]
    if result.returncode not in (0, 5):
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ConfigError(
            f"collecting tests failed with exit code {result.returncode}; `testfleet plan`"
            " collects without services, so modules that need them at import time fail here",
            details=tail,
        )
    return nodeids


def python_version(python: str) -> str:
    if python == sys.executable:
        return ".".join(map(str, sys.version_info[:3]))
    out = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"
