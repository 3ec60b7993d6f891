"""One virtual environment (venv) per Python version of the matrix, made with uv.

`python = ["3.11", "3.12"]` asks for a venv per version under `.testfleet/envs/<version>/`,
built from an interpreter already on this machine (`interpreters`) by uv (`uv`, `build`). A venv
is rebuilt only when what it was built from changes (`fingerprint`). Credentials for private
indexes reach uv and nothing else (`testfleet.credentials.child_environ`), and are masked in
whatever of uv's output is shown (`failures`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from testfleet.errors import ConfigError
from testfleet.interpreter import SETTING
from testfleet.processes import note_spawned
from testfleet.project import Project
from testfleet.rundir import MARK_VARIABLE, RunDir
from testfleet.threads import wait_all
from testfleet.values import is_version
from testfleet.venvs.build import Builder, venv_python
from testfleet.venvs.interpreters import installed_pythons, locate, probe
from testfleet.venvs.names import check_names
from testfleet.venvs.uv import UvRunner, find_uv, uv_version

__all__ = ["PythonTarget", "find_uv", "installed_pythons", "prepare_targets"]

UV_TIMEOUT = 900.0
MAX_PARALLEL_BUILDS = 4


@dataclass(frozen=True)
class PythonTarget:
    """One Python the suite runs on."""

    label: str  # what the user asked for: "3.12", or the interpreter as configured
    python: str  # the interpreter that runs pytest (a venv's bin/python, or the given one)
    version: str  # the full version it reports, "3.12.1"
    venv_dir: Path | None
    reused: bool  # an existing venv was up to date


def _single(project: Project) -> PythonTarget:
    """One interpreter as configured (or the running one): used as it is, no venv."""
    configured = project.config.python
    python: str = project.python
    if python == sys.executable:
        version = ".".join(map(str, sys.version_info[:3]))
    else:
        probed = probe(python, cpython=False)
        if probed is None and configured is None:
            raise ConfigError(
                f"{python} ({project.interpreter.why}) does not run as a Python interpreter;"
                f" repair or remove that environment, or set {SETTING} to one with pytest"
                " installed"
            )
        if probed is None:
            raise ConfigError(
                f"python {configured[0] if configured else python}: {python} does not run as a"
                " Python interpreter; point python at one with pytest installed, or leave it"
                " unset"
            )
        version = ".".join(map(str, probed))
    label = configured[0] if configured else ".".join(version.split(".")[:2])
    return PythonTarget(label, python, version, None, False)


def prepare_targets(
    project: Project, *, say: Callable[[str], None], run_dir: RunDir | None = None
) -> list[PythonTarget]:
    """The Pythons the suite runs on, in the configured order, venvs made or reused.

    A single interpreter (or none configured: the running one) is used as it is. For versions,
    every interpreter is found and every name checked before anything is built; then the venvs
    are built in parallel, each to the end, and the first failure (in configured order) is
    raised. With the `run_dir` of the run they are for, every uv is recorded there and
    marked as the run's: the run's reaper stops it when testfleet is killed.
    """
    configured: tuple[str, ...] | None = project.config.python
    if configured is None or not is_version(configured[0]):
        return [_single(project)]
    check_names(project.root, project.config.extras, project.config.dependency_groups)
    binary = find_uv()
    found = [(label, *locate(label, uv_binary=binary)) for label in configured]
    uv = _uv_runner(binary, run_dir)
    builder = Builder(project, uv, uv_version(uv), say)

    def target(label: str, interpreter: Path, version: str) -> PythonTarget:
        venv_dir, reused = builder.prepare(label, interpreter, version)
        return PythonTarget(label, str(venv_python(venv_dir)), version, venv_dir, reused)

    pool = ThreadPoolExecutor(
        max_workers=min(len(found), MAX_PARALLEL_BUILDS), thread_name_prefix="testfleet-venv"
    )
    futures: list[Future[PythonTarget]] = []
    try:
        futures = [pool.submit(target, *item) for item in found]
        # Others still building after a failure finish: their venvs are cached for the next run.
        wait_all(futures)
    except BaseException:
        # Ctrl-C, SIGTERM (Interrupted): no uv may outlive the run.
        _stop_builds(uv, futures)
        raise
    finally:
        pool.shutdown(wait=True)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
    return [future.result() for future in futures]


def _uv_runner(binary: Path, run_dir: RunDir | None) -> UvRunner:
    if run_dir is None:
        return UvRunner(binary, dict(os.environ), UV_TIMEOUT)

    def spawned(pid: int) -> None:
        run_dir.record(pid)  # its own process group: the build under it goes with it
        note_spawned(pid)

    # The mark finds a uv that testfleet was killed before it could record.
    environ = {**os.environ, MARK_VARIABLE: run_dir.mark}
    return UvRunner(binary, environ, UV_TIMEOUT, on_spawn=spawned)


def _stop_builds(uv: UvRunner, futures: Sequence[Future[PythonTarget]]) -> None:
    uv.stop_all(signal.SIGTERM)
    try:
        # uv exits promptly on SIGTERM; whatever does not is killed.
        wait_all(futures, timeout=5)
    finally:
        uv.stop_all(signal.SIGKILL)
