"""How each lane's pytest process is started.

A lane is a plain pytest process with the lane plugin (`-p testfleet.worker.plugin`), its own
env (the lane's services), and nothing writable shared with other lanes: its own pytest cache
directory, basetemp and TMPDIR.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from testfleet import pytest_cache
from testfleet.capabilities import USERNS_VARIABLE
from testfleet.envvars import process_environ
from testfleet.files import private_dir
from testfleet.lanes.early import EarlyLane
from testfleet.lanes.spawn import LaneLaunch
from testfleet.project import Project
from testfleet.rundir import MARK_VARIABLE
from testfleet.stack import LaneProvider, LaneSetup

# testfleet's own package directory (this module is in its lanes/).
PACKAGE = Path(__file__).resolve().parent.parent


# The group's collection directory, shared by its lanes (worker/shared.py reads it).
COLLECTION_VARIABLE = "TESTFLEET_COLLECTION_DIR"
# The benchmarks' switch back to lanes that each collect the whole suite.
SHARED_COLLECTION_VARIABLE = "TESTFLEET_SHARED_COLLECTION"


def shared_collection() -> bool:
    return os.environ.get(SHARED_COLLECTION_VARIABLE, "1") != "0"


def lane_dir(run_dir: Path, lane: int) -> Path:
    """The lane's own private directory: cache, basetemp, TMPDIR, output log."""
    return private_dir(private_dir(run_dir / "lanes") / str(lane))


def plugin_path(run_dir: Path) -> Path:
    """A directory holding only testfleet's own package, put on the lanes' PYTHONPATH: the
    lane plugin loads in any interpreter without testfleet installed there, and never
    installs anything into the project's environment."""
    folder = private_dir(run_dir / "pythonpath")
    return link_package(folder)


def link_package(folder: Path) -> Path:
    link = folder / "testfleet"
    if not link.exists():
        link.symlink_to(PACKAGE, target_is_directory=True)
    return folder


def on_pythonpath(env: dict[str, str], folder: Path) -> dict[str, str]:
    """`env` with `folder` (testfleet's package alone, see plugin_path) first on PYTHONPATH."""
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH", "")) if p)
    return env


def pytest_argv(python: str, *args: str) -> list[str]:
    """pytest in `python` with the lane plugin, which brings the fixtures, switches
    pytest-xdist off and, given a queue, takes its tests from the coordinator."""
    return [python, "-m", "pytest", "-p", "testfleet.worker.plugin", *args]


def own_dirs(folder: Path) -> list[str]:
    """pytest options giving a lane (or a recheck) its own cache and temp dirs: suites keep
    state in .pytest_cache that a second process would corrupt."""
    return ["-o", f"cache_dir={folder / 'pytest_cache'}", f"--basetemp={folder / 'basetemp'}"]


def early_environ(run_dir: Path, python: str) -> dict[str, str]:
    """An early lane's env until its hand-over: ours, and testfleet's package on its path."""
    return on_pythonpath(process_environ(python), plugin_path(run_dir))


def lane_argv(
    project: Project, stack: LaneProvider, lane: LaneSetup, run_dir: Path, *, python: str
) -> list[str]:
    folder = lane_dir(run_dir, lane.lane)
    argv = pytest_argv(
        python, *stack.expand_args(project.config.pytest_args, lane), *own_dirs(folder)
    )
    # Its pytest in the lane's network namespace, with the lane's servers.
    return lane.namespace.wrap(argv) if lane.namespace is not None else argv


def lane_environ(
    project: Project,
    lane: LaneSetup,
    run_dir: Path,
    socket_path: Path,
    coverage_dir: Path | None,
    *,
    mark: str,
    python: str,
    coverage_rcfile: str = "",
) -> dict[str, str]:
    folder = lane_dir(run_dir, lane.lane)
    tmp = private_dir(folder / "tmp")
    env = on_pythonpath({**process_environ(python), **lane.env}, plugin_path(run_dir))
    # The lane holds no capability of testfleet's user namespace (capabilities.py): a
    # testfleet that its tests start must make a user namespace of its own, not think it
    # is in one already.
    env.pop(USERNS_VARIABLE, None)
    # An outer run's, when testfleet runs inside a lane: launch() sets the run's own.
    env.pop(COLLECTION_VARIABLE, None)
    env.update(
        {
            "TMPDIR": str(tmp),
            "TESTFLEET_QUEUE": str(socket_path),
            MARK_VARIABLE: mark,
            # A segfault in a test prints the Python frames that led to it into the lane's log.
            "PYTHONFAULTHANDLER": "1",
        }
    )
    if coverage_dir is not None:
        env["TESTFLEET_COVERAGE_FILE"] = str(coverage_dir / ".coverage")
        env["TESTFLEET_COVERAGE_RCFILE"] = coverage_rcfile
    # --lf / --ff see the failures of earlier runs: each lane starts from the project's cache.
    pytest_cache.seed_lastfailed(project, folder / "pytest_cache")
    return env


def launch(
    project: Project,
    stack: LaneProvider,
    lanes: Mapping[int, LaneSetup],
    run_dir: Path,
    *,
    socket_path: Path,
    coverage_dir: Path | None,
    interactive: bool,
    mark: str,
    on_spawn: Callable[[int], None],
    python_of: Callable[[int], str],
    group_of: Callable[[int], str],
    coverage_rcfile: str = "",
    early: Callable[[int], EarlyLane | None] = lambda lane: None,
) -> LaneLaunch:
    """One lane on a terminal prints straight to it (pytest's own output, `--pdb` works);
    otherwise every lane writes to its own log, and testfleet shows progress."""
    argv = {
        n: lane_argv(project, stack, env, run_dir, python=python_of(n)) for n, env in lanes.items()
    }
    envs = {
        n: lane_environ(
            project,
            env,
            run_dir,
            socket_path,
            coverage_dir,
            mark=mark,
            python=python_of(n),
            coverage_rcfile=coverage_rcfile,
        )
        for n, env in lanes.items()
    }
    # Each group's lanes share one collection (worker/shared.py): a lane imports the test
    # files it claims first and those of the units it is handed, not the whole suite.
    groups = sorted({group_of(n) for n in lanes})
    for n, env in envs.items():
        if shared_collection():
            folder = private_dir(run_dir / "collection") / str(groups.index(group_of(n)))
            env[COLLECTION_VARIABLE] = str(private_dir(folder))
    single = len(lanes) == 1 and interactive

    def log_path(n: int) -> Path | None:
        return None if single else lane_dir(run_dir, n) / "output.log"

    return LaneLaunch(
        argv=lambda n: argv[n],
        env=lambda n: envs[n],
        log_path=log_path,
        cwd=project.root,
        foreground=single and sys.stdin.isatty(),
        on_spawn=on_spawn,
        group=group_of,
        early=early,
    )
