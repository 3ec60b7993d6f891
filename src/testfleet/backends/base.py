"""The seam between what a service kind describes and where its server runs.

A kind describes one server as a `Server`: a native launch and/or a container launch, the
port it listens on, how to probe it. A backend runs that description and hands back a
`Started`: the address and a `Handle` that readiness, diagnostics and teardown work through,
whatever runs the server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from testfleet.processes import RunAs
from testfleet.specs import Limits

# Called with the seconds left before the deadline; returns when ready, raises while not. No
# probe may block longer than it is given, so a start-timeout is kept to the poll interval.
Probe = Callable[[float], None]


class Handle(Protocol):
    """A running server, native process or container."""

    name: str

    def exit_code(self) -> int | None:
        """None while it runs; its exit code (negative: killed by that signal) after."""
        ...

    def tail(self, lines: int = 15) -> str: ...

    def log_text(self) -> str: ...

    def keep_log(self) -> Path:
        """Its log, copied where it outlives the run, for error messages to name."""
        ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class NativeLaunch:
    """How to run the server as a process of ours; `argv` and `env` get the port."""

    argv: Callable[[int], Sequence[str]]
    env: Mapping[str, str] | Callable[[int], Mapping[str, str]] | None = None
    cwd: Path | None = None
    run_as: RunAs | None = None
    shell: bool = False
    signal_group: bool = False
    stop_signal: int | None = None
    redact: Sequence[str] = ()
    umask: int = -1


@dataclass(frozen=True)
class ContainerLaunch:
    """How to run the server in a container of `image`, listening on `inner_port` inside.

    `files` are copied in before it starts (readable, not on the command line: secrets go
    there or in `env`); `tmpfs` maps paths to mount options."""

    image: str
    inner_port: int
    command: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    limits: Limits | None = None
    # Keep the container for the next run with the same description; `Server.reset` empties
    # it before it is handed out again.
    reuse: bool = False
    # Secrets its log may print (a dev server's banner), replaced wherever the log is shown.
    redact: Sequence[str] = ()


@dataclass(frozen=True)
class Server:
    """One server a kind wants running: the same description for every backend."""

    name: str  # for messages and log names: "postgres (lane 1)"
    folder: Path  # its private folder in the run: config, data, log
    probe: Callable[[str, int, Handle], Probe]  # readiness at the protocol level
    timeout: float
    port: int | None = None  # a fixed port on the host; else a free one
    native: NativeLaunch | None = None
    container: ContainerLaunch | None = None
    # Empties a reused server of an earlier run's data (host, port), once it answers.
    reset: Callable[[str, int], None] | None = None


@dataclass(frozen=True)
class Started:
    handle: Handle
    host: str
    port: int


class Backend(Protocol):
    """Runs `Server` descriptions; `stop_all` ends everything it started."""

    name: str

    def start(self, server: Server) -> Started: ...

    def handles(self) -> list[Handle]:
        """Every server it runs now."""
        ...

    def dead(self) -> list[Handle]:
        """Servers that ended although nobody stopped them."""
        ...

    def stop_all(self) -> None: ...
