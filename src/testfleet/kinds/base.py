"""A service kind's record: everything the rest of testfleet needs to know about a kind,
declared once in the kind's own folder (`kinds/<kind>/__init__.py`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BeforeValidator

from testfleet.binaries import Binary, Lookup, find_binary
from testfleet.errors import ConfigError
from testfleet.specs import Backend, ServiceSpec

if TYPE_CHECKING:
    from testfleet.service import Service, StackContext

# Makes the kind's runtime for one service of a run: (name, spec, the run's context, the
# kind's record). Kinds import their runtime module inside it, when a run needs it.
Runtime = Callable[[str, Any, "StackContext", "Kind"], "Service"]


def env_prefix(name: str) -> str:
    """A service name as the start of an env var: `user-db` -> `USER_DB`."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def url_exports(name: str) -> dict[str, str]:
    """Most kinds export one `<NAME>_URL`."""
    return {f"{env_prefix(name)}_URL": "{url}"}


def export_sets(sets: Mapping[str, Mapping[str, str]]) -> BeforeValidator:
    """A kind's `export`: a table of variables (`{ DATABASE_URL = "{url}" }`), or a list of
    the names of `sets` and such tables (`["libpq", { DATABASE_URL = "{url}" }]`), read as the
    one table they make. The sets' variables change a client library's defaults for every
    connection a suite makes (libpq's PGHOST, ...), which broke suites that test those
    defaults when they were exported unasked: so a suite asks for them, in one line."""
    names = ", ".join(f'"{name}"' for name in sets)

    def read(value: object) -> object:
        if not isinstance(value, list):
            return value  # a table, or pydantic says what is wrong with it
        table: dict[str, object] = {}
        for item in value:
            if isinstance(item, dict):
                table.update(item)
            elif isinstance(item, str) and item in sets:
                table.update(sets[item])
            else:
                raise ValueError(
                    f"{item!r} is not a set of variables this kind exports (sets: {names});"
                    ' name variables of your own in a table: { DATABASE_URL = "{url}" }'
                )
        return table

    return BeforeValidator(read)


@dataclass(frozen=True)
class Slots:
    """A shared server's limit on lanes: with that isolation mode every lane takes one of its
    `count` `what` (Valkey's 16 DB numbers)."""

    count: int
    what: str


@dataclass(frozen=True)
class Kind:
    """One service kind.

    `isolation` maps each backend the kind supports to its isolation modes, the default
    first: how lanes are kept apart on that backend. `shared` (external only) lets every lane
    use one server on purpose; testfleet never picks it by itself."""

    name: str
    label: str  # what users call it: "PostgreSQL"
    spec: type[ServiceSpec]
    fields: tuple[str, ...]  # the values a lane gets: `{url}`, `{host}`, ...
    planned: Callable[[Any], dict[str, str]]  # lane 1's values, without a server
    runtime: Runtime
    isolation: Mapping[Backend, tuple[str, ...]]
    exports: Callable[[str], dict[str, str]] = url_exports
    extra: str | None = None  # the pip extra that brings its driver or binary
    lookup: Lookup | None = None  # how to find its native binary
    image: str | None = None  # the official image, for the docker backend
    inner_port: int | None = None  # where its server listens inside a container
    drivers: tuple[str, ...] = ()  # Python modules its readiness and isolation import
    reusable: bool = False  # its runtime can empty a kept container (`reuse = true`)
    # Isolation modes whose lanes share a server with a fixed number of places.
    slots: Mapping[str, Slots] = field(default_factory=dict)
    # Isolation modes whose lanes a running `up` cannot hand out again: what they make on the
    # shared server (a database, a mount) is not undone per lane.
    unrecycled: frozenset[str] = frozenset()
    # Drops what a run made on an external server and wrote down (leftovers.py), when the run
    # could not itself (a SIGKILL): its reaper or the next run calls this with the record.
    drop_leftover: Callable[[Mapping[str, Any]], None] | None = None
    # What an external server of this kind needs besides its url (Vault: its token).
    external_keys: tuple[str, ...] = ()
    # Its native server refuses to run as root: under root it runs as an unprivileged account.
    unprivileged: bool = False
    # The longest unix socket its native servers make, under the service's folder of the run
    # (a socket's path holds 107 bytes: space.socket_problem checks the run's base for it).
    unix_socket: str | None = None
    # What its clients say when they connect without the run's credential (`auth = true`):
    # failures matching it get a summary hint naming the `auth = false` switch.
    unauthenticated: re.Pattern[str] | None = None
    # Sets of variables a service exports only when asked (`export = ["libpq"]`), as its spec
    # reads them; and, for some, what clients say when they look for the server where their
    # library does without those variables: failures matching it get a summary hint naming
    # the line that asks for them.
    export_sets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    missed_exports: Mapping[str, re.Pattern[str]] = field(default_factory=dict)

    @property
    def backends(self) -> tuple[Backend, ...]:
        return tuple(self.isolation)

    def exports_for(self, name: str) -> dict[str, str]:
        return self.exports(name)

    def binary(self, configured: str | None = None, *, where: str = "") -> Binary:
        """Its native binary: the configured path, else a wheel's, else the system's."""
        if self.lookup is None:
            raise ConfigError(f"{where or self.name}: {self.name} services have no native binary")
        return find_binary(self.lookup, configured, where=where or self.name)

    def slots_for(self, spec: ServiceSpec) -> Slots | None:
        """The lane limit of this service's shared server, if its isolation has one."""
        return self.slots.get(spec.isolation_mode)
