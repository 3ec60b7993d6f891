"""Environments of what testfleet starts: placeholder values, the processes' own
environment, and external services' values read from ours."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from testfleet.errors import ConfigError
from testfleet.placeholders import expand, references, variable

# The number of lanes of the run a lane belongs to, as its tests see it. Its name is no
# option's env var (TESTFLEET_<KEY>): an env that holds it changes no testfleet run.
LANE_COUNT = "TESTFLEET_LANE_COUNT"


def placeholder_values(
    own: Mapping[str, str] | None,
    others: Mapping[str, Mapping[str, str]],
    common: Mapping[str, str],
) -> dict[str, str]:
    """`{url}` for a service's own values, `{postgres.url}` for the others', plus `{lane}`..."""
    values = dict(common)
    for name, fields in others.items():
        values.update({f"{name}.{key}": value for key, value in fields.items()})
    values.update(own or {})
    return values


def placeholder_environ(values: Mapping[str, str]) -> dict[str, str]:
    """The variables that placeholders in shell strings refer to, `{project_dir}` ->
    `TESTFLEET_PROJECT_DIR`, each holding its value as it is: a shell expands them as data."""
    environ: dict[str, str] = {}
    names: dict[str, str] = {}
    for name, value in values.items():
        var = variable(name)
        if var in names and environ[var] != value:
            raise ConfigError(
                f"services: {{{names[var]}}} and {{{name}}} would share the variable {var}"
                " of shell strings; rename one of the two services"
            )
        names[var], environ[var] = name, value
    return environ


def process_environ(python: str) -> dict[str, str]:
    """The environment for setup commands, command services and lanes: ours, with the
    target interpreter's bin directory first on PATH, as in an activated virtualenv, so that
    `python -m app` and tools installed beside the tests resolve without activating it."""
    # Private index credentials are for uv alone, never for tests or services.
    from testfleet.credentials import child_environ

    environ = child_environ(os.environ)
    bin_dir = str(Path(python).parent) if "/" in python else str(Path(sys.executable).parent)
    parts = environ.get("PATH", "").split(os.pathsep)
    if parts[:1] != [bin_dir]:
        environ["PATH"] = os.pathsep.join([bin_dir, *(p for p in parts if p)])
    return environ


def external_url(name: str, template: str, where: str, key: str = "url") -> str:
    """An external service's address (or another of its values, `key`), with `{env.NAME}`
    read from our environment."""
    values: dict[str, str] = {}
    for ref in references(template):
        variable = ref.partition(".")[2]
        if variable not in os.environ:
            raise ConfigError(
                f"{where}.{key} uses {{{ref}}}, and {variable} is not set; export {variable}"
                f" with {name}'s {key}, or write it in {key}"
            )
        values[ref] = os.environ[variable]
    return expand(template, values, where=f"{where}.{key}")
