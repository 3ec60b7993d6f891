"""Lanes started before their services: the interpreter start, pytest's import and its
plugins' overlap with loading the config and starting the stack (see worker/boot.py).

An early lane is handed its arguments, env and output descriptors once its services are
provisioned; a lane that is never handed over (fewer lanes needed, another interpreter, a
run that fails first) is discarded. Imports stay light: `testfleet run` starts lane 1 this
way before the rest of testfleet is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run by path, not as `testfleet.worker.boot`: pytest rewrites the asserts of the testfleet
# plugin package as it imports it, which it cannot do for a package already imported.
BOOT_SCRIPT = Path(__file__).parent.parent / "worker" / "boot.py"
# '' (the current directory) leaves sys.path before anything is imported from it.
_BOOT = (
    "import sys; sys.path.pop(0); import runpy; runpy.run_path(sys.argv[1], run_name='__main__')"
)
# Read by the interpreter as it starts (hash seed, warnings, dev mode, encodings, locale):
# an early lane whose env differs in these is discarded. PYTHONPATH and PYTHONFAULTHANDLER
# are applied at the hand-over.
_AT_START = ("PYTHON", "LC_", "LANG")
_APPLIED = {"PYTHONPATH", "PYTHONFAULTHANDLER"}
# The benchmarks' switch between lanes started early and lanes started after the stack.
SWITCH_VARIABLE = "TESTFLEET_EARLY_LANES"


@dataclass
class EarlyLane:
    python: str
    process: subprocess.Popen[bytes]
    sock: socket.socket
    env: Mapping[str, str]
    handed_over: bool = False

    def hand_over(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        stdio: tuple[int, int, int],
    ) -> subprocess.Popen[bytes] | None:
        """Start pytest in the lane; None when the lane is gone or its interpreter started
        with other settings than the lane needs (start one the usual way)."""
        if self.process.poll() is not None or _at_start(self.env) != _at_start(env):
            self.discard()
            return None
        line = json.dumps({"args": list(args), "env": dict(env), "cwd": cwd}).encode() + b"\n"
        try:
            sent = socket.send_fds(self.sock, [line], list(stdio))
            self.sock.sendall(line[sent:])
        except OSError:
            self.discard()
            return None
        self.sock.close()
        self.handed_over = True
        return self.process

    def discard(self) -> None:
        """Closing the socket ends a waiting lane; a lane still importing is killed."""
        self.sock.close()
        if self.handed_over:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait()


def _own_process_group() -> dict[str, Any]:
    """Its own process group, as every lane. Python 3.11's process_group lets the start use
    vfork; preexec_fn (3.10) forces a full fork of the parent."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}


def _at_start(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_AT_START) and k not in _APPLIED}


def enabled() -> bool:
    return os.environ.get(SWITCH_VARIABLE, "1") != "0"


def start(python: str, env: Mapping[str, str]) -> EarlyLane:
    """A lane process in its own process group (as every lane), waiting for its hand-over."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [python, "-c", _BOOT, str(BOOT_SCRIPT), str(theirs.fileno())],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            **_own_process_group(),
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return EarlyLane(python, process, ours, dict(env))


def speculate(argv: Sequence[str]) -> EarlyLane | None:
    """Lane 1 for `testfleet run`, started before the rest of testfleet is imported: most
    runs use the running interpreter; when the config says otherwise it is discarded."""
    options = argv[: list(argv).index("--")] if "--" in argv else argv
    if not enabled() or subcommand(argv) != "run" or {"-h", "--help"} & set(options):
        return None
    from testfleet.credentials import child_environ

    try:
        return start(_likely_python(argv), child_environ(os.environ))
    except OSError:
        return None


def _likely_python(argv: Sequence[str]) -> str:
    """The interpreter lanes use when the config names none (interpreter.py), for the project
    of -C DIR or the current directory: found with a few stats, no config read."""
    from testfleet.interpreter import default_interpreter

    start_dir = Path(_leading(argv)[0] or ".").absolute()
    for folder in (start_dir, *start_dir.parents):
        if (folder / "pyproject.toml").is_file():
            return default_interpreter(folder, os.environ).path
    return sys.executable


def subcommand(argv: Sequence[str]) -> str | None:
    """The command word (`run`), skipping -C DIR; None before any other option (testfleet's
    own --help or --version)."""
    return _leading(argv)[1]


def _leading(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """-C DIR's directory and the command word, read as `subcommand` says."""
    rest = list(argv)
    project = None
    while rest:
        word = rest.pop(0)
        flag, given, value = word.partition("=")
        # -C DIR, -CDIR, --project DIR, --project=DIR, and what argparse takes for --project
        # (--proj, --p=DIR: any prefix).
        if word == "-C" or (len(flag) > 2 and "--project".startswith(flag) and not given):
            if rest:
                project = rest.pop(0)
            continue
        if word.startswith("-C") or (len(flag) > 2 and "--project".startswith(flag)):
            # -CDIR; -C=DIR and --project=DIR are DIR to argparse.
            project = value if given and (flag == "-C" or not word.startswith("-C")) else word[2:]
            continue
        return project, None if word.startswith("-") else word
    return project, None


class EarlyLanes:
    """The run's early lanes by lane number, and the one `speculate` started (lane 1's, if
    the interpreter is right)."""

    def __init__(self, speculative: EarlyLane | None = None) -> None:
        self.spare = speculative
        self.lanes: dict[int, EarlyLane] = {}

    def start(self, lane: int, python: str, env: Mapping[str, str]) -> None:
        if self.spare is not None and self.spare.python == python:
            self.lanes[lane], self.spare = self.spare, None
        else:
            self.lanes[lane] = start(python, env)

    def drop_spare(self) -> None:
        """The lane started before the config was read, when no lane wanted its interpreter."""
        if self.spare is not None:
            self.spare.discard()
            self.spare = None

    def take(self, lane: int) -> EarlyLane | None:
        return self.lanes.pop(lane, None)

    def close(self) -> None:
        """Every lane not handed over ends (at the latest when the run does)."""
        for early in [*self.lanes.values(), *([self.spare] if self.spare else [])]:
            early.discard()
        self.lanes.clear()
        self.spare = None
