"""Lane processes: pytest with one lane's env, in its own process group, bounded in time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence

from testfleet.config import Project
from testfleet.envvars import process_environ
from testfleet.errors import EXIT_USAGE, TestfleetError
from testfleet.stack import LaneEnv

INTERRUPT_GRACE_SECONDS = 10.0

# pytest's exit codes in testfleet's terms: a pytest usage error is a usage error.
PYTEST_EXIT = {0: 0, 1: 1, 2: 130, 3: 3, 4: EXIT_USAGE, 5: 5}


class RunTimedOut(TestfleetError):
    exit_code = 1


def pytest_command(project: Project, args: Sequence[str]) -> list[str]:
    junit = project.path(project.config.junit_xml)
    junit.parent.mkdir(parents=True, exist_ok=True)
    return [project.python, "-m", "pytest", *args, f"--junitxml={junit}"]


def run_lane(
    project: Project, lane: LaneEnv, argv: Sequence[str], *, deadline: float | None
) -> int:
    """Run one pytest process for `lane`; returns testfleet's exit code for its outcome."""
    env = {**process_environ(project.python), **lane.env}
    process = subprocess.Popen(
        list(argv),
        cwd=project.root,
        env=env,
        # Its own group: a timeout or Ctrl-C ends the whole group, forked workers included.
        preexec_fn=os.setpgrp,  # noqa: PLW1509 - called from the main thread only
    )
    try:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _end_group(process, signal.SIGTERM)
            raise RunTimedOut(
                f"the run timed out after {project.config.timeout:g} s and was stopped;"
                " raise timeout (--timeout) or find the slow test"
            ) from None
        except BaseException:
            # Ctrl-C or SIGTERM: let pytest finish its reports, then make sure it is gone.
            _end_group(process, signal.SIGINT)
            raise
        return PYTEST_EXIT.get(code, code)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _end_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
    try:
        process.wait(INTERRUPT_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
