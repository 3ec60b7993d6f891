"""An early lane (`worker/boot.py FD`, run by path), started before its services exist.

It imports pytest while testfleet loads the config and the
stack starts, then waits on its socket (FD) for the hand-over: pytest's arguments, the
lane's whole environment, its directory, and the descriptors for stdin, stdout and stderr.
Only then does pytest start, so the suite's conftest and test modules see the lane's final
env at import time. When the socket closes without a hand-over (the run needed fewer lanes,
or ended), the process exits.

Kept to the standard library and pytest: it runs in the project's interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
from typing import Any

MAX_FDS = 3


def _preimport() -> None:
    """What every lane imports first: pytest and its built-in plugins. Not installed plugins:
    pytest rewrites their asserts as it imports them, which it cannot do for a module
    already imported."""
    with contextlib.suppress(BaseException):
        import importlib

        from _pytest.config import default_plugins, essential_plugins

        # pytest's own plugins too (never rewritten): what every session loads.
        for name in (*essential_plugins, *default_plugins):
            importlib.import_module(name if name.startswith("_pytest") else f"_pytest.{name}")


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One JSON line and the descriptors sent with its first bytes; (None, []) on EOF."""
    data, fds, _, _ = socket.recv_fds(sock, 1 << 16, MAX_FDS)
    chunks = [data]
    while data and not data.endswith(b"\n"):
        data = sock.recv(1 << 16)
        chunks.append(data)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(b"".join(chunks)), list(fds)


def _become(message: dict[str, Any], fds: list[int]) -> None:
    for target, fd in zip((0, 1, 2), fds, strict=False):
        os.dup2(fd, target)
        os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        # The new target may be a terminal (one interactive lane) where the old was /dev/null.
        with contextlib.suppress(Exception):
            stream.reconfigure(line_buffering=stream.isatty())  # type: ignore[union-attr]
    os.chdir(message["cwd"])
    env: dict[str, str] = message["env"]
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # TMPDIR changed: anything cached from the old one is forgotten
    # As `python -m pytest` from the project directory: it first on sys.path, then the
    # lane's PYTHONPATH entries this interpreter did not start with.
    entries = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[0:0] = [message["cwd"], *(p for p in entries if p not in sys.path)]
    if env.get("PYTHONFAULTHANDLER"):
        import faulthandler

        faulthandler.enable()
    sys.argv = ["pytest", *message["args"]]


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[-1]))
    _preimport()
    try:
        message, fds = receive(sock)
    except (OSError, ValueError):
        return 0
    finally:
        sock.close()
    if message is None:
        return 0
    _become(message, fds)
    import pytest

    return int(pytest.main(message["args"]))


if __name__ == "__main__":
    raise SystemExit(main())
