"""What the schema alone cannot say about a `Config`: services that depend on each other in a
cycle, placeholders that name nothing, two services exporting one variable or listening on
one port, keys a backend does not read, and lanes the services cannot serve."""

from __future__ import annotations

import graphlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from testfleet.config import Config
from testfleet.errors import ConfigError, did_you_mean
from testfleet.kinds import KINDS
from testfleet.kinds.base import env_prefix
from testfleet.kinds.command.spec import CommandSpec
from testfleet.kinds.postgres.spec import PostgresSpec
from testfleet.placeholders import check_syntax, references
from testfleet.specs import TABLE, ServerSpec

# The values each kind's lanes get, which placeholders and exports may use.
SERVICE_FIELDS: dict[str, tuple[str, ...]] = {name: kind.fields for name, kind in KINDS.items()}
ENV_REF_RE = re.compile(r"^env\.[A-Za-z_][A-Za-z0-9_]*$")


def check(config: Config, *, namespace_hint: str | None = None) -> None:
    """Every rule, in the order a user would want to hear of them (`namespace_hint`: see
    check_lanes)."""
    _check_graph(config)
    _check_placeholders(config)
    _check_exports(config)
    _check_ports(config)
    _check_backends(config)
    if isinstance(config.lanes, int):
        check_lanes(config, config.lanes, namespace_hint=namespace_hint)


COMMON_PLACEHOLDERS = ("lane", "lanes", "run_id", "run_dir", "project_dir")


NAMESPACE_HINT = 'network = "namespace" (each lane its own 127.0.0.1)'


def namespace_hint_for(config: Config, sources: Mapping[str, str], table: Mapping[str, Any]) -> str:
    """How to give each lane its own 127.0.0.1, told where network was set (`sources`, and
    `table`: [tool.testfleet] as the file has it): a flag or env var that replaced the file's
    network = "namespace" is to be dropped; one that says shared, changed; else the key."""
    source = sources.get("network")
    if config.network != "shared" or source in (None, "pyproject.toml"):
        return NAMESPACE_HINT
    flag = source.startswith("-")
    if table.get("network") == "namespace":
        option = f"the {source} shared option" if flag else f"{source}=shared"
        return f'drop {option}, which overrides network = "namespace" in pyproject.toml'
    wanted = f"{source} namespace" if flag else f"{source}=namespace"
    return f"{wanted} (each lane its own 127.0.0.1)"


def check_lanes(config: Config, lanes: int, *, namespace_hint: str | None = None) -> None:
    """Refuse a number of lanes the services cannot serve, before any of them starts.

    Called by `validate` when `lanes` is a number, and again once `"auto"` is resolved.
    `namespace_hint`: how this command's user turns namespaces on (see namespace_hint_for)."""
    # In a namespace per lane every lane has its own 127.0.0.1: fixed ports do not meet.
    spaced = config.network == "namespace"
    for name, spec in config.services.items():
        where = f"{TABLE}.services.{name}"
        kind = KINDS[spec.kind]
        label = kind.label
        slots = kind.slots_for(spec)
        if slots is not None and lanes > slots.count:
            apart = "server" in kind.isolation.get(spec.backend_name, ())
            raise ConfigError(
                f'{where}.isolation = "{spec.isolation_mode}": each lane takes one of {label}\'s'
                f" {slots.count} {slots.what}, so at most {slots.count} lanes (this run has"
                f" {lanes}); "
                + (
                    f'use isolation = "server" (a server per lane, no limit) or -n {slots.count}'
                    if apart
                    else f"use -n {slots.count}"
                )
            )
        if isinstance(spec, ServerSpec) and spec.isolation == "none" and lanes > 1:
            raise ConfigError(
                f"{where}: one external {label} server cannot keep {lanes} lanes apart"
                f" (tests in one lane would see another's data); use -n 1, or set"
                ' isolation = "shared" to let the lanes share it on purpose'
            )
        if spec.port_number is not None and lanes > 1 and spec.runs_per_lane() and not spaced:
            exported = list(KINDS[spec.kind].exports_for(name))
            picks = f"exports {exported[0]}" if exported else "fills {port} with it"
            shared = "database" in kind.isolation.get(spec.backend_name, ())
            raise ConfigError(
                f"{where}.port = {spec.port_number}: every lane starts its own {name} server,"
                f" and only one can listen on port {spec.port_number}; use -n 1, or"
                f" {namespace_hint or NAMESPACE_HINT}"
                f"{',' if shared else ' or'}"
                f" drop port (testfleet picks free ports and {picks})"
                + (', or isolation = "database" (one server for every lane)' if shared else "")
            )


def _check_graph(config: Config) -> None:
    for name, spec in config.services.items():
        for dep in spec.depends_on:
            if dep == name:
                raise ConfigError(
                    f"{TABLE}.services.{name}.depends-on: a service cannot depend on itself"
                )
            if dep not in config.services:
                raise ConfigError(
                    f"{TABLE}.services.{name}.depends-on: no service named '{dep}'"
                    f"{did_you_mean(dep, config.services)}"
                )
    try:
        start_order(config)
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise ConfigError(
            f"{TABLE}.services: depends-on forms a cycle ({cycle});"
            " remove one of those dependencies"
        ) from None


def start_order(config: Config) -> list[list[str]]:
    """Services grouped in levels; each level depends only on earlier ones."""
    sorter = graphlib.TopologicalSorter({n: s.depends_on for n, s in config.services.items()})
    sorter.prepare()
    levels: list[list[str]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        levels.append(ready)
        sorter.done(*ready)
    return levels


def _check_placeholders(config: Config) -> None:
    """Every templated value: brace syntax, known placeholders, reachable services; shell
    strings also where their values can be quoted."""

    def check(
        where: str,
        template: str,
        own: str | None,
        deps: Sequence[str],
        *,
        shell: bool = False,
        other_services: bool = True,
    ) -> None:
        check_syntax(template, where=where, shell=shell)
        own_fields = SERVICE_FIELDS[config.services[own].kind] if own is not None else ()
        for ref in references(template):
            service, _, key = ref.partition(".")
            if not key:
                if ref in own_fields or ref in COMMON_PLACEHOLDERS:
                    continue
                raise ConfigError(
                    f"{where}: unknown placeholder {{{ref}}}"
                    f"{did_you_mean(ref, [*own_fields, *COMMON_PLACEHOLDERS])};"
                    " write {service.url}-style references or {{ for a literal brace"
                )
            if not other_services:
                raise ConfigError(
                    f"{where}: {{{ref}}}: setup runs once, before any lane has other services'"
                    f" values; use {own}'s own fields ({', '.join(own_fields)}) and"
                    " {project_dir}, {run_id}, {run_dir}"
                )
            if service not in config.services:
                raise ConfigError(
                    f"{where}: {{{ref}}} names no service{did_you_mean(service, config.services)}"
                )
            fields = SERVICE_FIELDS[config.services[service].kind]
            if key not in fields:
                raise ConfigError(
                    f"{where}: {{{ref}}}: {service} has no '{key}'{did_you_mean(key, fields)}"
                    f" (it has {', '.join(fields)})"
                )
            if service not in deps:
                raise ConfigError(
                    f"{where}: uses {{{ref}}} but {own} does not depend on {service};"
                    f" add '{service}' to depends-on"
                )

    def check_command(
        where: str,
        command: str | Sequence[str],
        own: str,
        deps: Sequence[str],
        other_services: bool,
    ) -> None:
        """A string runs through /bin/sh; each part of a list is one argument."""
        if isinstance(command, str):
            check(where, command, own, deps, shell=True, other_services=other_services)
            return
        for index, part in enumerate(command):
            check(f"{where}[{index}]", part, own, deps, other_services=other_services)

    everyone = list(config.services)
    for key, value in config.env.items():
        check(f"{TABLE}.env.{key}", value, None, everyone)
    for index, arg in enumerate(config.pytest_args):
        check(f"{TABLE}.pytest-args[{index}]", arg, None, everyone)
    for name, spec in config.services.items():
        where = f"{TABLE}.services.{name}"
        for key, value in spec.export.items():
            check(f"{where}.export.{key}", value, name, spec.depends_on)
        if isinstance(spec, PostgresSpec) and spec.setup is not None:
            check_command(f"{where}.setup", spec.setup, name, (), other_services=False)
        if isinstance(spec, CommandSpec):
            for key, value in spec.env.items():
                check(f"{where}.env.{key}", value, name, spec.depends_on)
            check_command(f"{where}.command", spec.command, name, spec.depends_on, True)
            ready = spec.ready
            if ready is not None and ready.http is not None and not ready.http.startswith("/"):
                check(f"{where}.ready.http", ready.http, name, spec.depends_on)
            if ready is not None and ready.command is not None:
                check(f"{where}.ready.command", ready.command, name, spec.depends_on, shell=True)
            if spec.ready is None and not spec.uses_port():
                raise ConfigError(
                    f'{where}: no readiness check; add ready = {{ http = "/health" }}'
                    " (or tcp, log, command), use {port} so a TCP check applies, or set port"
                )


def _check_exports(config: Config) -> None:
    seen: dict[str, tuple[str, bool]] = {}  # variable -> (service, exported by default)
    for name, spec in config.services.items():
        names = [(var, False) for var in spec.export]
        if spec.export_defaults:
            defaults = KINDS[spec.kind].exports_for(name)
            names += [(var, True) for var in defaults]
        for var, by_default in names:
            other, other_by_default = seen.setdefault(var, (name, by_default))
            if other != name:
                raise ConfigError(_collision(var, name, by_default, other, other_by_default))


def _collision(var: str, name: str, by_default: bool, other: str, other_by_default: bool) -> str:
    """Which service to change, and how: a default variable is renamed by dropping it."""
    where = f"{TABLE}.services.{name}"
    if by_default and other_by_default:
        return (
            f"{where}: {var} is a default variable of both {other} and {name}; set"
            " export-defaults = false on one of them (and export its own names)"
        )
    if by_default:
        return (
            f"{where}: {var}, one of its default variables, is exported by {other} too;"
            f" rename {other}'s, or set export-defaults = false on {name}"
        )
    if other_by_default:
        return (
            f"{where}.export: {var} is exported by {other} by default too; rename it here,"
            f" or set export-defaults = false on {other}"
        )
    return f"{where}.export: {var} is exported by {other} too; rename one of them"


def _check_ports(config: Config) -> None:
    """Two services cannot listen on one fixed port, whatever the number of lanes."""
    taken: dict[int, str] = {}
    for name, spec in config.services.items():
        port = spec.port_number
        if port is None:
            continue
        if port in taken:
            raise ConfigError(
                f"{TABLE}.services.{name}.port = {port}: {taken[port]} has that port"
                " too; give each its own, or drop port (testfleet picks free ports)"
            )
        taken[port] = name


# Keys that only mean something on some backends, and which.
_BACKEND_KEYS: dict[str, tuple[str, ...]] = {
    "binary": ("native",),
    "image": ("docker",),
    "limits": ("docker",),
    "reuse": ("docker",),
    "url": ("external",),
    "token": ("external",),
    "password": ("external",),
}
# Keys of the docker backend, accepted whatever the run's backend is (see _check_backends).
_DOCKER_KEYS = frozenset({"image", "limits", "reuse"})


def _check_backends(config: Config) -> None:
    """Each service on a backend its kind supports, in an isolation mode that backend can
    give, with only the keys that backend reads."""
    for name, spec in config.services.items():
        where = f"{TABLE}.services.{name}"
        kind = KINDS[spec.kind]
        backend = spec.backend_name
        if backend not in kind.backends:
            source = "backend" if isinstance(spec, ServerSpec) and spec.backend else "run's backend"
            raise ConfigError(
                f"{where}: {kind.label} services run on {', '.join(kind.backends)} only, not"
                f' {backend} (the {source}); set {where}.backend = "{kind.backends[0]}"'
            )
        if config.network == "namespace" and backend != "native":
            raise ConfigError(
                f"{where}: network = \"namespace\" runs each lane's servers inside the lane's"
                f" namespace, which a {backend} server cannot join; set {where}.backend ="
                ' "native", or network = "shared"'
            )
        if not isinstance(spec, ServerSpec):
            continue
        modes = kind.isolation[backend]
        if config.network == "namespace" and spec.isolation != "server" and "server" in modes:
            raise ConfigError(
                f'{where}.isolation = "{spec.isolation}": with network = "namespace" each lane'
                ' reaches only servers in its own namespace; use isolation = "server"'
            )
        if spec.isolation not in modes:
            raise ConfigError(
                f'{where}.isolation = "{spec.isolation}": {kind.label} on the {backend} backend'
                f" offers {' or '.join(f'{chr(34)}{m}{chr(34)}' for m in modes)}"
            )
        for key, backends in _BACKEND_KEYS.items():
            value = getattr(spec, key, None)
            # `password = true` asks for a generated one on servers testfleet runs itself.
            if value is None or value is False or value is True or backend in backends:
                continue
            # How the service runs in Docker is kept for when it does: a project names its
            # images so that --backend docker (TESTFLEET_BACKEND) can switch it. Only a
            # service whose own table names another backend can never read them.
            if key in _DOCKER_KEYS and not spec.backend_chosen:
                continue
            raise ConfigError(
                f'{where}.{key} is read with backend = "{backends[0]}" only, and {name} runs'
                f' on {backend}; remove it, or set {where}.backend = "{backends[0]}"'
            )
        if spec.reuse and not kind.reusable:
            reusable = ", ".join(k.name for k in KINDS.values() if k.reusable)
            raise ConfigError(
                f"{where}.reuse: {kind.label} containers start in well under a second and"
                f" cannot be emptied between runs; reuse is for {reusable}; remove it"
            )
        if backend == "external":
            if spec.url is None:
                raise ConfigError(
                    f"{where}: an external {kind.label} needs its address; add url ="
                    f' "{{env.{env_prefix(name)}_URL}}" (or the URL itself)'
                )
            if spec.port_number is not None:
                raise ConfigError(
                    f"{where}.port: an external server's address is its url; remove port"
                )
            for key in kind.external_keys:
                if getattr(spec, key, None) is None:
                    raise ConfigError(
                        f"{where}: an external {kind.label} needs its {key} too; add {key} ="
                        f' "{{env.{env_prefix(name)}_{key.upper()}}}" (or the {key} itself)'
                    )
            check_syntax(spec.url, where=f"{where}.url")
            for ref in references(spec.url):
                if not ENV_REF_RE.match(ref):
                    raise ConfigError(
                        f"{where}.url: {{{ref}}}: an external url may use environment variables"
                        " only, as {env.NAME}"
                    )
