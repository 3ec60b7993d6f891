"""The seam between what a service kind describes and where its server runs.

A kind describes one server as a `Server`: a native launch, a container launch and/or how to
reach one someone else runs, the port it listens on, how to probe it. A backend (native,
docker, external) runs or reaches that description and hands back a `Started`: the address
and a `Handle` that readiness, diagnostics and teardown work through, whatever runs the
server.
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
class Address:
    """Where a server someone else runs listens, and how to sign in: its url as read."""

    url: str  # with `{env.NAME}` filled in
    scheme: str
    host: str
    port: int
    user: str = ""
    password: str = ""
    path: str = ""  # without its leading "/": a database, a DB number
    query: str = ""


@dataclass(frozen=True)
class ExternalLaunch:
    """How to reach a server someone else runs: the config's `url` (`{env.NAME}` allowed)
    and the kind's reading of it, which raises ValueError saying what it wants."""

    service: str  # the service's name, for messages: "valkey at 127.0.0.1:6379"
    url: str
    where: str  # the config key of the service, `tool.testfleet.services.NAME`
    parse: Callable[[str], Address]


@dataclass(frozen=True)
class Started:
    handle: Handle
    host: str
    port: int
    # How the external backend reached it (credentials, database, options); None for a server
    # of ours.
    address: Address | None = None

    @property
    def owned(self) -> bool:
        """Whether testfleet runs this server: only then is everything on it the run's own.
        On a server it does not own, what a lane makes carries the run's id, is written down
        before it is made, and only that is dropped afterwards."""
        return self.address is None


@dataclass(frozen=True)
class Server:
    """One server a kind wants running: the same description for every backend."""

    name: str  # for messages and log names: "postgres (lane 1)"
    folder: Path  # its private folder in the run: config, data, log
    probe: Callable[[Started], Probe]  # readiness at the protocol level, where it listens
    timeout: float
    port: int | None = None  # a fixed port on the host; else a free one
    native: NativeLaunch | None = None
    container: ContainerLaunch | None = None
    external: ExternalLaunch | None = None
    # Empties a reused server of an earlier run's data (host, port), once it answers.
    reset: Callable[[str, int], None] | None = None


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
