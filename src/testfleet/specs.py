"""What every service spec shares: the base model, its common keys and their validators.

Kind modules (`testfleet.kinds.*`) subclass `ServiceSpec`; `config` gathers them. Nothing here
imports the config or any runtime module, so a kind's record stays importable everywhere.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, StrictBool

from testfleet.values import seconds

TABLE = "tool.testfleet"
IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
Backend = Literal["native", "docker", "external"]
# Docker's own syntax for memory sizes: a number with an optional b/k/m/g unit.
MEMORY_RE = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _port(value: object) -> object:
    # bool is an int to Python: `port = true` must not mean port 1.
    if value == "default":
        return value  # the kind's own port; Config puts the number in
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError('must be a TCP port number from 1 to 65535, or "default"')
    return value


def command_value(value: object) -> object:
    """One message for both forms, rather than one per member of the union."""
    if isinstance(value, str) or (
        isinstance(value, list) and value and all(isinstance(part, str) for part in value)
    ):
        return value
    raise ValueError("must be a shell command (a string) or an argv (a non-empty list of strings)")


_TYPE_NAMES = {str: "string", int: "number", float: "number", bool: "boolean"}


def settings_of(*kinds: type) -> BeforeValidator:
    def check(value: object) -> object:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(item, kinds):
                    names = " or ".join(dict.fromkeys(_TYPE_NAMES[kind] for kind in kinds))
                    raise ValueError(f"{key} must be a {names} (got {item!r})")
        return value

    return BeforeValidator(check)


def _memory(value: object) -> object:
    if not isinstance(value, str) or not MEMORY_RE.match(value):
        raise ValueError('must be a size like "512m" or "2g"')
    return value


def _cpus(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1024:
        raise ValueError("must be a positive number of CPUs, like 1 or 0.5")
    return value


Port = Annotated[int | Literal["default"] | None, BeforeValidator(_port)]
Seconds = Annotated[float, BeforeValidator(seconds)]
Identifier = Annotated[str, Field(pattern=IDENT_RE.pattern)]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=_kebab,
        populate_by_name=False,
        defer_build=True,
    )


class Limits(Model):
    """A container's share of the machine (`limits = { memory = "512m", cpus = 1 }`)."""

    memory: Annotated[str | None, BeforeValidator(_memory)] = None
    cpus: Annotated[float | None, BeforeValidator(_cpus)] = None


class ServiceSpec(Model):
    """What every service accepts."""

    kind: str
    depends_on: tuple[str, ...] = ()
    export: dict[str, str] = Field(default_factory=dict)
    export_defaults: StrictBool = True
    start_timeout: Seconds = 30.0
    port: Port = None

    @property
    def port_number(self) -> int | None:
        """The fixed port, once Config has turned "default" into the kind's number."""
        return self.port if isinstance(self.port, int) else None

    @property
    def backend_name(self) -> Backend:
        """Where the service's servers run; `command` services run natively only."""
        return "native"

    @property
    def isolation_mode(self) -> str:
        """How lanes are kept apart: "server" when each lane has a server of its own."""
        return "server"

    def runs_per_lane(self) -> bool:
        """Whether every lane starts a server of its own (so a fixed port cannot serve two)."""
        return self.backend_name != "external" and self.isolation_mode == "server"


class ServerSpec(ServiceSpec):
    """A server testfleet can run natively, in Docker, or reach where it already runs.

    `backend` and `isolation` left unset are filled in by Config: the run's `backend` and the
    kind's default isolation on that backend."""

    backend: Backend | None = None
    isolation: str | None = None
    binary: str | None = None
    image: str | None = None
    limits: Limits | None = None
    reuse: StrictBool = False
    url: str | None = None
    # The backend this service's own table names (None: the run's, filled in by Config):
    # keys of another backend contradict only a backend chosen here (config_rules.py).
    _own_backend: Backend | None = PrivateAttr(default=None)

    def model_post_init(self, context: object, /) -> None:
        self._own_backend = self.backend

    @property
    def backend_chosen(self) -> bool:
        """Whether the service's own table names its backend (no option can change it)."""
        return self._own_backend is not None

    @property
    def backend_name(self) -> Backend:
        return self.backend or "native"

    @property
    def isolation_mode(self) -> str:
        return self.isolation or "server"
