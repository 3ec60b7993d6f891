"""Lanes: how many, and how each one's pytest process is started.

A lane is a plain pytest process with the lane plugin (`-p testfleet.lane`), its own env
(the lane's services), and nothing writable shared with other lanes: its own pytest cache
directory, basetemp and TMPDIR.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from testfleet import durations, pytest_cache
from testfleet.config import Config, Project
from testfleet.coordinator import LaneLaunch
from testfleet.early_lanes import EarlyLane
from testfleet.envvars import placeholder_values, process_environ
from testfleet.errors import ConfigError, ServiceError
from testfleet.files import private_dir
from testfleet.kinds import KINDS
from testfleet.options import MAX_LANES, is_version
from testfleet.placeholders import expand
from testfleet.recheck import CollectionFailed
from testfleet.rundir import MARK_VARIABLE
from testfleet.specs import TABLE
from testfleet.stack import LaneEnv, LaneProvider


def resolve_lanes(config: Config, cpus: int | None = None) -> int:
    """`auto`: one lane per core for a suite without services (CPU-bound); two per core with
    services, because integration tests mostly wait on their services, and a waiting lane
    leaves its core to another. Never more than the services allow: one lane when a server
    per lane must take a fixed port, 16 with Valkey DB numbers, 64 in all."""
    if config.lanes != "auto":
        return config.lanes
    cores = cpus or os.cpu_count() or 1
    # Per Python version: every version of a matrix runs this many lanes on the one stack.
    versions = len(config.python) if config.python and is_version(config.python[0]) else 1
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


def _relative(project: Project, item: str) -> str:
    """A path or node id as pytest's node ids spell it: relative to the project root."""
    path, sep, rest = item.partition("::")
    candidate = Path(path)
    if candidate.is_absolute():
        with contextlib.suppress(ValueError):
            path = str(candidate.relative_to(project.root))
    return (os.path.normpath(path) if path else path) + sep + rest


def lane_dir(run_dir: Path, lane: int) -> Path:
    """The lane's own private directory: cache, basetemp, TMPDIR, output log."""
    return private_dir(private_dir(run_dir / "lanes") / str(lane))


def plugin_path(run_dir: Path) -> Path:
    """A directory holding only testfleet's own package, put on the lanes' PYTHONPATH: the
    lane plugin loads in any interpreter without testfleet installed there, and never
    installs anything into the project's environment."""
    folder = private_dir(run_dir / "pythonpath")
    return _link_package(folder)


def _link_package(folder: Path) -> Path:
    link = folder / "testfleet"
    if not link.exists():
        link.symlink_to(Path(__file__).resolve().parent, target_is_directory=True)
    return folder


def _on_pythonpath(env: dict[str, str], folder: Path) -> dict[str, str]:
    """`env` with `folder` (testfleet's package alone, see plugin_path) first on PYTHONPATH."""
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH", "")) if p)
    return env


def pytest_argv(python: str, *args: str) -> list[str]:
    """pytest in `python` with the lane plugin, which brings the fixtures, switches
    pytest-xdist off and, given a queue, takes its tests from the coordinator."""
    return [python, "-m", "pytest", "-p", "testfleet.lane", *args]


def own_dirs(folder: Path) -> list[str]:
    """pytest options giving a lane (or a recheck) its own cache and temp dirs: suites keep
    state in .pytest_cache that a second process would corrupt."""
    return ["-o", f"cache_dir={folder / 'pytest_cache'}", f"--basetemp={folder / 'basetemp'}"]


def early_environ(run_dir: Path, python: str) -> dict[str, str]:
    """An early lane's env until its hand-over: ours, and testfleet's package on its path."""
    return _on_pythonpath(process_environ(python), plugin_path(run_dir))


def lane_argv(
    project: Project, stack: LaneProvider, lane: LaneEnv, run_dir: Path, *, python: str
) -> list[str]:
    folder = lane_dir(run_dir, lane.lane)
    argv = pytest_argv(
        python, *stack.expand_args(project.config.pytest_args, lane), *own_dirs(folder)
    )
    # Its pytest in the lane's network namespace, with the lane's servers.
    return lane.namespace.wrap(argv) if lane.namespace is not None else argv


def lane_environ(
    project: Project,
    lane: LaneEnv,
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
    env = _on_pythonpath({**process_environ(python), **lane.env}, plugin_path(run_dir))
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
    lanes: Mapping[int, LaneEnv],
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


def _collected(project: Project, python: str, args: Sequence[str]) -> tuple[int, str, Any]:
    """pytest's collection in `python` without services, as the lane plugin reports it:
    (exit code, its output, the plugin's report or None)."""
    with tempfile.TemporaryDirectory(prefix="testfleet-collect-") as folder:
        target = Path(folder) / "collected.json"
        argv = [python, "-m", "pytest", "--collect-only", "-q", "-p", "testfleet.lane"]
        argv += ["-p", "no:cacheprovider", *args]
        env = _on_pythonpath(process_environ(python), _link_package(Path(folder)))
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
    code, output, report = _collected(project, python or project.python, planning_args(project))
    if code not in (0, 5) or report is None or report["errors"]:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ConfigError(
            f"collecting tests failed with exit code {code}; `testfleet plan`"
            " collects without services, so modules that need them at import time fail here",
            details=tail,
        )
    return list(report["nodeids"])


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


# A recheck run may take its tests' measured time twice over, plus start-up.
RECHECK_BASE_SECONDS = 60.0
# Options that pick tests by pytest's cache or deselect: a recheck names its tests itself.
# So are -x and --maxfail: a failing predecessor must not keep the test itself from running.
_SELECTION_FLAGS = {
    "-x",
    "--exitfirst",
    "--lf",
    "--last-failed",
    "--ff",
    "--failed-first",
    "--nf",
    "--new-first",
    "--sw",
    "--stepwise",
    "--sw-skip",
    "--stepwise-skip",
}


def project_modules(project: Project, python: str) -> list[str]:
    """The suite's test files in pytest's collection order, as its configuration finds them
    without the run's own path arguments: the candidates a module may need imported first."""
    _, _, report = _collected(project, python, recheck_args(project, planning_args(project)))
    nodeids = report["nodeids"] if report else []
    return list(dict.fromkeys(nodeid.split("::", 1)[0] for nodeid in nodeids))


def recheck_args(project: Project, args: Sequence[str]) -> list[str]:
    """The run's pytest arguments without what selects tests (paths, node ids, --lf,
    --deselect): a recheck runs exactly the node ids it names, in its order."""
    kept: list[str] = []
    skip_next = keep_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        if keep_next or arg in ("-k", "-m"):  # an expression, even one that looks like a path
            keep_next = not keep_next
            kept.append(arg)
            continue
        if arg in _SELECTION_FLAGS or arg.startswith(("--deselect=", "--maxfail=")):
            continue
        if arg in ("--deselect", "--maxfail"):
            skip_next = True
            continue
        if not arg.startswith("-") and ("::" in arg or (project.root / arg).exists()):
            continue
        kept.append(arg)
    return kept


def recheck_runner(
    project: Project,
    stack: LaneProvider,
    run_dir: Path,
    *,
    python: str,
    mark: str,
    next_lane: Callable[[], int],
    durations: Mapping[str, float],
    test_timeout: float | None,
    deadline: float | None,
    collect_only: bool = False,
) -> Callable[[Sequence[str]], bool | None]:
    """Runs node ids, in order, in a fresh lane (new services), then releases that lane:
    whether the last of them passed, or None when the run did not say (hung, crashed)."""

    def run(nodeids: Sequence[str]) -> bool | None:
        limit = RECHECK_BASE_SECONDS + 2 * sum(durations.get(n, 0.0) for n in nodeids)
        limit += test_timeout or 0.0
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 1:
                raise ServiceError("the run's timeout came")
            limit = min(limit, left)
        number = next_lane()
        try:
            lane = stack.provision(number)
            folder = lane_dir(run_dir, lane.lane)
            report = folder / "recheck.json"
            argv = pytest_argv(
                python,
                # The outcome reporter (the lane plugin has no queue here).
                "-p",
                "testfleet.recheck_plugin",
                # Their order is the point: keep plugins from shuffling it.
                "-p",
                "no:randomly",
                "-q",
                *(["--collect-only"] if collect_only else []),
                *recheck_args(project, stack.expand_args(project.config.pytest_args, lane)),
                *own_dirs(folder),
                *nodeids,
            )
            if lane.namespace is not None:
                argv = lane.namespace.wrap(argv)
            env = lane_environ(project, lane, run_dir, Path(), None, mark=mark, python=python)
            env.pop("TESTFLEET_QUEUE", None)
            env["TESTFLEET_RECHECK_FILE"] = str(report)
            code, _ = stack.run.supervisor.run_to_end(
                f"recheck (lane {lane.lane})",
                argv,
                log_path=folder / "recheck.log",
                timeout=limit,
                env=env,
                cwd=project.root,
            )
            if code is None:
                return None  # hung past its time
            try:
                document = json.loads(report.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None  # it crashed before pytest could say
            outcome = document.get("outcomes", {}).get(nodeids[-1])
            target_file = nodeids[-1].split("::", 1)[0]
            errors = document.get("collection_errors", {})
            if (outcome is None or collect_only) and target_file in errors:
                raise CollectionFailed(errors[target_file])
            if collect_only:
                return True
            return None if outcome is None else outcome == "passed"
        finally:
            stack.release(number)
            shutil.rmtree(lane_dir(run_dir, number), ignore_errors=True)

    return run
