"""External backend: servers someone else runs (a CI service container, another tool's
stack, a shared development server). Nothing is started or stopped here: the service's `url`
is read (`{env.NAME}` from our environment), checked against what the kind speaks, and
waited for until it answers at the protocol level.

A runtime then keeps lanes apart on it as on a shared server of its own (a database, a DB
number, a mount per lane), with one difference that `Started.owned` tells it: on a server
testfleet does not own, what a lane makes carries the run's id, is written down before it is
made, and only that is dropped afterwards.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from testfleet.backends.base import Address, Handle, Server, Started
from testfleet.envvars import external_url
from testfleet.errors import ConfigError, ServiceError
from testfleet.readiness import wait_ready


class ExternalServer:
    """A server someone else runs: testfleet never stops it and has no log of it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def exit_code(self) -> int | None:
        return None

    def tail(self, lines: int = 15) -> str:
        return ""

    def log_text(self) -> str:
        return ""

    def keep_log(self) -> Path:
        return Path("/dev/null")

    def stop(self) -> None:
        """Left running: it is not ours."""


class ExternalBackend:
    """Reaches `Server.external` descriptions; owns nothing, so it stops nothing."""

    name = "external"

    def start(self, server: Server) -> Started:
        launch = server.external
        if launch is None:
            raise ServiceError(f"{server.name}: this kind cannot use an external server")
        url = external_url(launch.service, launch.url, launch.where)
        try:
            address = launch.parse(url)
        except ValueError as exc:
            raise ConfigError(f"{launch.where}.url: {exc}") from None
        started = Started(ExternalServer(server.name), address.host, address.port, address)
        wait_ready(
            None,
            server.probe(started),
            timeout=server.timeout,
            what=f"{launch.service} at {address.host}:{address.port}",
        )
        return started

    def handles(self) -> list[Handle]:
        return []

    def dead(self) -> list[Handle]:
        """Nothing of ours can die: a server that goes away fails the tests that use it."""
        return []

    def stop_all(self) -> None:
        """Nothing to stop."""


def parse_url(url: str, *, schemes: Sequence[str], default_port: int, want: str) -> Address:
    """A `scheme://[user[:password]@]host[:port][/path][?query]` url of one of `schemes`;
    ValueError naming `want` when it is not one."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"want {want}, got {parts.scheme or 'no scheme'}://…")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(f"want {want}, with a numeric port") from None
    return Address(
        url=url,
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        user=urllib.parse.unquote(parts.username or ""),
        password=urllib.parse.unquote(parts.password or ""),
        path=parts.path.lstrip("/"),
        query=parts.query,
    )
