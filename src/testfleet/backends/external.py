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

import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from testfleet.backends.base import Address, ExternalLaunch, Handle, Server, Started
from testfleet.envvars import external_url
from testfleet.errors import ConfigError, ServiceError
from testfleet.readiness import AuthFailed, wait_ready

ENV_REFERENCE = re.compile(r"\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")


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
        try:
            wait_ready(
                None,
                server.probe(started),
                timeout=server.timeout,
                what=f"{launch.service} at {address.host}:{address.port}",
            )
        except AuthFailed as exc:
            raise ServiceError(refused(launch, address, exc)) from None
        return started

    def handles(self) -> list[Handle]:
        return []

    def dead(self) -> list[Handle]:
        """Nothing of ours can die: a server that goes away fails the tests that use it."""
        return []

    def stop_all(self) -> None:
        """Nothing to stop."""


def refused(launch: ExternalLaunch, address: Address, exc: AuthFailed) -> str:
    """One line for a server that refused its credential: the service, its url without the
    secret, the server's words, and where the credential is set (the variable it comes from)."""
    key = f"{launch.where}.{exc.key}"
    source = exc.source or (launch.url if exc.key == "url" else "")
    names = ENV_REFERENCE.findall(source)
    place = f"{', '.join('$' + name for name in names)} ({key})" if names else key
    answer = " ".join(exc.answer.split())
    return (
        f"{launch.service} at {shown_url(address)}: authentication failed ({answer}); check the"
        f" {exc.credential} in {place}"
    )


def shown_url(address: Address) -> str:
    """Where a server is, without its secret: the user name only beside a password (a NATS
    url's user part is its token), no query (it may hold one)."""
    user = f"{address.user}@" if address.user and address.password else ""
    host = f"[{address.host}]" if ":" in address.host else address.host
    path = f"/{address.path}" if address.path else ""
    return f"{address.scheme}://{user}{host}:{address.port}{path}"


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
