"""`[tool.testfleet]` schema, validated once into a frozen `Config`.

Layers, lowest first: pyproject.toml < TESTFLEET_* env vars < command-line flags. Every value
remembers its source so an error can name where to fix it.
"""

from __future__ import annotations

import graphlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from testfleet.errors import ConfigError, did_you_mean
from testfleet.kinds import KINDS, AnyServiceSpec
from testfleet.kinds.base import env_prefix
from testfleet.kinds.command.spec import CommandSpec, ReadyCheck
from testfleet.kinds.postgres.spec import PostgresSpec
from testfleet.options import OPTIONS, Option, Options
from testfleet.placeholders import check_syntax, references
from testfleet.specs import TABLE, ServerSpec, ServiceSpec
from testfleet.values import is_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
ENV_REF_RE = re.compile(r"^env\.[A-Za-z_][A-Za-z0-9_]*$")
SPEC_BY_KIND: dict[str, type[ServiceSpec]] = {name: kind.spec for name, kind in KINDS.items()}
# The values each kind's lanes get, which placeholders and exports may use.
SERVICE_FIELDS: dict[str, tuple[str, ...]] = {name: kind.fields for name, kind in KINDS.items()}


class Config(Options):
    """The whole resolved configuration of one run: the options (options.py), the services
    and the `env` table."""

    services: dict[str, AnyServiceSpec] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)

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
    def _mark_first_of_each_kind(self) -> Config:
        seen: set[str] = set()
        has_redis = any(spec.kind == "redis" for spec in self.services.values())
        for spec in self.services.values():
            spec._first_of_kind = spec.kind not in seen
            seen.add(spec.kind)
            if spec.kind == "valkey" and has_redis:
                spec._first_of_kind = False  # REDIS_URL belongs to the Redis service

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


@dataclass(frozen=True)
class Project:
    """A loaded project: where it lives and its validated configuration."""

    root: Path
    config: Config
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def python(self) -> str:
        """The interpreter that runs pytest when one is named: a path relative to the project,
        a name on PATH, or (unset, or versions for uv) the one running testfleet."""
        configured = self.config.python
        if configured is None or is_version(configured[0]):
            return sys.executable
        if "/" not in configured[0]:
            return configured[0]
        # Not resolved: a venv's bin/python is a link to its base interpreter, and following
        # it would leave the venv behind.
        return os.path.abspath(self.root / configured[0])

    def path(self, relative: str) -> Path:
        """A path from the config, relative to the project root."""
        return (self.root / relative).resolve()


COMMON_PLACEHOLDERS = ("lane", "lanes", "run_id", "run_dir", "project_dir")


def default_exports(name: str, kind: str, *, first_of_kind: bool = False) -> dict[str, str]:
    """The env vars a service exports unless `export-defaults = false`. `first_of_kind`: the
    first service of its kind in config order also exports the kind's well-known variables
    (PGHOST, ... for postgres); only one service can own them."""
    return KINDS[kind].exports_for(name, first_of_kind=first_of_kind)


def check_lanes(config: Config, lanes: int) -> None:
    """Refuse a number of lanes the services cannot serve, before any of them starts.

    Called by `validate` when `lanes` is a number, and again once `"auto"` is resolved."""
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
            exported = list(default_exports(name, spec.kind, first_of_kind=spec.first_of_kind))
            picks = f"exports {exported[0]}" if exported else "fills {port} with it"
            shared = "database" in kind.isolation.get(spec.backend_name, ())
            raise ConfigError(
                f"{where}.port = {spec.port_number}: every lane starts its own {name} server,"
                f" and only one can listen on port {spec.port_number}; use -n 1, or"
                ' network = "namespace" (each lane its own 127.0.0.1)'
                f"{',' if shared else ' or'}"
                f" drop port (testfleet picks free ports and {picks})"
                + (', or isolation = "database" (one server for every lane)' if shared else "")
            )


def find_pyproject(start: Path) -> Path:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no pyproject.toml in {start} or above; run from your project or pass -C DIR"
    )


def load_project(
    start: Path,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    options: Sequence[Option] = OPTIONS,
) -> Project:
    """Read pyproject.toml, apply the env and CLI layers of `options` (those a command reads),
    validate once."""
    pyproject = find_pyproject(start.resolve())
    try:
        document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{pyproject}: not UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start});"
            " TOML files must be UTF-8, so save it as UTF-8"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot read it as TOML: {exc}") from None
    table = document.get("tool", {}).get("testfleet")
    if table is None:
        raise ConfigError(f"{pyproject} has no [{TABLE}] table; add one (see the README's example)")
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: {TABLE} must be a table")
    raw, sources = layer(table, cli or {}, environ if environ is not None else {}, options)
    config = validate(raw, sources)
    return Project(root=pyproject.parent, config=config, sources=sources)


def layer(
    table: Mapping[str, Any],
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    options: Sequence[Option] = OPTIONS,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge file < env < CLI for `options` (declared in `testfleet.options`)."""
    raw = dict(table)
    sources = {key: "pyproject.toml" for key in raw}
    for option in options:
        if option.env in environ:
            raw[option.key] = _parse_option(option, environ[option.env], option.env)
            sources[option.key] = option.env
        if cli.get(option.key) is not None:
            raw[option.key] = cli[option.key]
            sources[option.key] = option.flag
    extra_args = cli.get("extra_pytest_args")
    if extra_args:
        raw["pytest-args"] = [*raw.get("pytest-args", []), *extra_args]
    return raw, sources


def _parse_option(option: Option, text: str, source: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}={text!r}: {exc}") from None


def validate(raw: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> Config:
    """Validate a raw `[tool.testfleet]` table; every problem becomes one ConfigError line."""
    sources = sources or {}
    services = raw.get("services", {})
    if not isinstance(services, dict):
        raise ConfigError(f"{TABLE}.services must be a table of services")
    prepared = dict(raw)
    prepared["services"] = {name: _with_kind(name, spec) for name, spec in services.items()}
    try:
        config = Config.model_validate(prepared)
    except ValidationError as exc:
        # One line: the first problem, and how many wait behind it. A union reports every
        # member's complaint about one key; the user made one mistake there, so count keys.
        lines = list(dict.fromkeys(_describe(error, prepared, sources) for error in exc.errors()))
        keys = {line.split(":", 1)[0] for line in lines}
        more = len(keys) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(lines[0] + suffix) from None
    _check_graph(config)
    _check_placeholders(config)
    _check_exports(config)
    _check_ports(config)
    _check_backends(config)
    if isinstance(config.lanes, int):
        check_lanes(config, config.lanes)
    return config


def _with_kind(name: str, spec: Any) -> Any:
    where = f"{TABLE}.services.{name}"
    if not NAME_RE.match(name):
        raise ConfigError(
            f"{where}: service names use lowercase letters, digits, '-' and '_'; rename it"
        )
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table (write [{where}])")
    kind = spec.get("kind", name)
    if kind not in SPEC_BY_KIND:
        kinds = ", ".join(SPEC_BY_KIND)
        if "kind" in spec:
            raise ConfigError(
                f"{where}.kind: unknown service kind '{kind}'{did_you_mean(kind, SPEC_BY_KIND)}"
                f" (kinds: {kinds})"
            )
        raise ConfigError(
            f"{where}: '{name}' is not a service kind; add kind = one of {kinds}"
            f"{did_you_mean(name, SPEC_BY_KIND)}"
        )
    return {**spec, "kind": kind}


def _model_at(loc: Sequence[str | int], raw: Mapping[str, Any]) -> type[BaseModel] | None:
    """The model whose keys apply at `loc`, for did-you-mean suggestions."""
    if len(loc) <= 1:
        return Config
    if loc[0] == "services" and len(loc) >= 2:
        spec = raw.get("services", {}).get(loc[1], {})
        model: type[BaseModel] = SPEC_BY_KIND.get(spec.get("kind", ""), ServiceSpec)
        if len(loc) == 3:
            return model
        if len(loc) == 4 and loc[2] == "ready":
            return ReadyCheck
    return None


def _user_loc(error: Any, raw: Mapping[str, Any]) -> list[str | int]:
    """The error's key path as the user wrote it. Unions add tags to pydantic's path (the
    service kind, 'str', "literal['auto']") that are no key: keep only the parts found in
    the input, and a missing key's own name."""
    loc: list[str | int] = []
    node: Any = raw
    parts = list(error["loc"])
    # The services' discriminated union names the kind after the service: `command` would
    # pass for a key of a command service.
    if len(parts) >= 3 and parts[0] == "services" and parts[2] in SPEC_BY_KIND:
        del parts[2]
    for index, part in enumerate(parts):
        found = (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list | tuple) and isinstance(part, int) and part < len(node)
        )
        if found:
            node = node[part]
        elif error["type"] != "missing" or index < len(parts) - 1:
            continue
        loc.append(part)
    return loc


def _key_path(loc: Sequence[str | int]) -> str:
    return TABLE + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _describe(error: Any, raw: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    user_loc = _user_loc(error, raw)
    loc = [str(part) for part in user_loc]
    path = _key_path(user_loc)
    source = sources.get(loc[0]) if loc else None
    where = f" (from {source})" if source and source != "pyproject.toml" else ""
    if error["type"] == "extra_forbidden":
        model = _model_at(loc, raw)
        names = [f.alias or n for n, f in model.model_fields.items()] if model else []
        hint = did_you_mean(loc[-1], names) or (
            f"; known keys: {', '.join(sorted(names))}" if names else ""
        )
        return f"unknown key {path}{hint}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    message = re.sub(r" or instance of \w+", "", message)  # our class names mean nothing to users
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{path}: {message}{shown}{where}"


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
            defaults = default_exports(name, spec.kind, first_of_kind=spec.first_of_kind)
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
