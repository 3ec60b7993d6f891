"""`[tool.testfleet]` as one frozen, validated `Config`: the options (options.py), the services
(each kind's spec) and the `env` table. What the schema alone cannot say is checked by
config_rules.py; project.py reads the file and layers the env vars and flags on it.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from testfleet.ci.config import CiSettings
from testfleet.kinds import KINDS, AnyServiceSpec
from testfleet.options import Options
from testfleet.specs import ServerSpec, ServiceSpec
from testfleet.values import is_version

SPEC_BY_KIND: dict[str, type[ServiceSpec]] = {name: kind.spec for name, kind in KINDS.items()}


class Config(Options):
    """The whole resolved configuration of one run: the options (options.py), the services
    and the `env` table."""

    services: dict[str, AnyServiceSpec] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    ci: CiSettings = Field(default_factory=CiSettings)  # what `testfleet ci` writes

    @property
    def matrix(self) -> tuple[str, ...]:
        """The Python versions of the matrix, each in a venv made with uv; () when `python`
        names one interpreter or is unset."""
        return self.python if self.python and is_version(self.python[0]) else ()

    @property
    def versions(self) -> int:
        """How many Pythons the suite runs on at once (every one runs its own lanes)."""
        return len(self.matrix) or 1

    @model_validator(mode="after")
    def _fill_backends(self) -> Config:
        """Each server's backend (its own, else the run's) and its isolation on it."""
        filled: dict[str, ServiceSpec] = {}
        for name, spec in self.services.items():
            kind = KINDS[spec.kind]
            update: dict[str, object] = {}
            if spec.port == "default":
                if kind.inner_port is None:
                    raise ValueError(
                        f'services.{name}.port = "default": {kind.label} services have no'
                        " default port; give a number"
                    )
                update["port"] = kind.inner_port
            if isinstance(spec, ServerSpec):
                backend = spec.backend or self.backend
                modes = kind.isolation.get(backend, ("server",))
                # A namespace per lane: every lane needs servers of its own in it.
                wanted = "server" if self.network == "namespace" and "server" in modes else None
                update["backend"] = backend
                update["isolation"] = spec.isolation or wanted or modes[0]
            filled[name] = spec.model_copy(update=update) if update else spec
        # Frozen model: the dict is replaced in place, as validation would have made it.
        self.services.clear()
        self.services.update(filled)
        return self

    @model_validator(mode="after")
    def _pytest_args_leave_parallelism_to_us(self) -> Config:
        for arg in self.pytest_args:
            if arg in ("-n", "--numprocesses", "--dist") or arg.startswith(
                ("-n=", "--numprocesses=")
            ):
                raise ValueError(
                    f"pytest-args has {arg}: lanes replace pytest-xdist; use testfleet's -n/lanes"
                )
        return self
