"""`[tool.testfleet]` schema, validated once into a frozen `Config`.

Layers, lowest first: pyproject.toml < TESTFLEET_* env vars < command-line flags. Every value
remembers its source so an error can name where to fix it.
"""

from __future__ import annotations

import graphlib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from testfleet.errors import ConfigError, did_you_mean
from testfleet.options import OPTIONS, Option
from testfleet.placeholders import references

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TABLE = "tool.testfleet"
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=_kebab, populate_by_name=False
    )


class ServiceSpec(_Model):
    """What every service accepts."""

    kind: str
    depends_on: tuple[str, ...] = ()
    export: dict[str, str] = Field(default_factory=dict)
    export_defaults: bool = True
    start_timeout: float = Field(30.0, gt=0)


class NativeServiceSpec(ServiceSpec):
    binary: str | None = None


class PostgresSpec(NativeServiceSpec):
    kind: Literal["postgres"] = "postgres"
    isolation: Literal["database", "server"] = "database"
    database: Annotated[str, Field(pattern=IDENT_RE.pattern)] = "test"
    user: Annotated[str, Field(pattern=IDENT_RE.pattern)] = "testfleet"
    setup: str | tuple[str, ...] | None = None
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)


class ValkeySpec(NativeServiceSpec):
    kind: Literal["valkey"] = "valkey"
    isolation: Literal["server", "database"] = "server"
    password: bool = False
    settings: dict[str, str | int] = Field(default_factory=dict)


class NatsSpec(NativeServiceSpec):
    kind: Literal["nats"] = "nats"
    isolation: Literal["server"] = "server"
    jetstream: bool = True
    token: bool = False


class VaultSpec(NativeServiceSpec):
    kind: Literal["vault"] = "vault"
    isolation: Literal["server"] = "server"


class ReadyCheck(_Model):
    """Exactly one way to tell that a command service is ready."""

    tcp: bool = False
    http: str | None = None
    log: str | None = None
    command: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReadyCheck:
        chosen = [k for k in ("http", "log", "command") if getattr(self, k) is not None]
        chosen += ["tcp"] if self.tcp else []
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of tcp = true, http = '/path', log = 'regex', command = '...'"
            )
        if self.log is not None:
            try:
                re.compile(self.log)
            except re.error as exc:
                raise ValueError(f"log is not a valid regular expression: {exc}") from None
        return self


class CommandSpec(ServiceSpec):
    kind: Literal["command"] = "command"
    command: str | tuple[str, ...]
    ready: ReadyCheck | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None

    def templates(self) -> list[str]:
        parts = [self.command] if isinstance(self.command, str) else list(self.command)
        return parts + list(self.env.values()) + list(self.export.values())

    def uses_port(self) -> bool:
        return any("port" in references(t) for t in self.templates())


AnyServiceSpec = PostgresSpec | ValkeySpec | NatsSpec | VaultSpec | CommandSpec

SPEC_BY_KIND: dict[str, type[ServiceSpec]] = {
    "postgres": PostgresSpec,
    "valkey": ValkeySpec,
    "nats": NatsSpec,
    "vault": VaultSpec,
    "command": CommandSpec,
}


class Config(_Model):
    """The whole resolved configuration of one run."""

    services: dict[str, Annotated[AnyServiceSpec, Field(discriminator="kind")]] = Field(
        default_factory=dict
    )
    pytest_args: tuple[str, ...] = ()
    timeout: float | None = Field(None, gt=0)
    junit_xml: str = ".testfleet/junit.xml"
    dotenv: str = ".testfleet/env"
    run_dir: str | None = None
    python: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    lanes: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    test_timeout: float | None = Field(None, gt=0)
    group_by: Literal["module", "class", "test"] = "module"
    durations: str = ".testfleet/durations.json"
    coverage: bool = False
    coverage_fail_under: float | None = Field(None, ge=0, le=100)
    coverage_xml: str = ".testfleet/coverage.xml"

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
        """The interpreter that runs pytest: a path relative to the project, a name on PATH,
        or (unset) the one running testfleet."""
        configured = self.config.python
        if configured is None:
            return sys.executable
        return str(self.path(configured)) if "/" in configured else configured

    def path(self, relative: str) -> Path:
        """A path from the config, relative to the project root."""
        return (self.root / relative).resolve()


# Keys a service's exported variables may use, besides the service's own extra names.
SERVICE_FIELDS: dict[str, tuple[str, ...]] = {
    "postgres": ("url", "host", "port", "user", "password", "database"),
    "valkey": ("url", "host", "port", "password", "db"),
    "nats": ("url", "host", "port", "token"),
    "vault": ("url", "addr", "host", "port", "token"),
    "command": ("url", "host", "port"),
}
COMMON_PLACEHOLDERS = ("lane", "lanes", "run_id", "run_dir", "project_dir")


def default_exports(name: str, kind: str) -> dict[str, str]:
    """The env vars a service exports unless `export-defaults = false`."""
    prefix = re.sub(r"[^A-Z0-9]", "_", name.upper())
    if kind == "vault":
        return {f"{prefix}_ADDR": "{addr}", f"{prefix}_TOKEN": "{token}"}
    if kind == "command":
        return {}
    exports = {f"{prefix}_URL": "{url}"}
    if kind == "valkey" and name in ("valkey", "redis"):
        exports = {"VALKEY_URL": "{url}", "REDIS_URL": "{url}"}
    return exports


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
) -> Project:
    """Read pyproject.toml, apply env and CLI layers, validate once."""
    pyproject = find_pyproject(start.resolve())
    try:
        document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot read it as TOML: {exc}") from None
    table = document.get("tool", {}).get("testfleet")
    if table is None:
        raise ConfigError(f"{pyproject} has no [{TABLE}] table; add one (see the README's example)")
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: {TABLE} must be a table")
    raw, sources = layer(table, cli or {}, environ if environ is not None else {})
    config = validate(raw, sources)
    return Project(root=pyproject.parent, config=config, sources=sources)


def layer(
    table: Mapping[str, Any], cli: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge file < env < CLI for the options declared in `testfleet.options`."""
    raw = dict(table)
    sources = {key: "pyproject.toml" for key in raw}
    for option in OPTIONS:
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
        lines = [_describe(error, prepared, sources) for error in exc.errors()]
        raise ConfigError(lines[0], details="\n".join(lines[1:])) from None
    _check_graph(config)
    _check_placeholders(config)
    _check_exports(config)
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


def _describe(error: Any, raw: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    loc = [str(part) for part in error["loc"]]
    # A discriminated union adds the tag ('postgres', ...) after the service name; users never
    # wrote it, so it must not appear in the key path.
    if len(loc) >= 3 and loc[0] == "services" and loc[2] in SPEC_BY_KIND:
        del loc[2]
    path = ".".join([TABLE, *loc])
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
    def check(where: str, template: str, own: str | None, allowed: Sequence[str]) -> None:
        for ref in references(template):
            service, _, key = ref.partition(".")
            if not key:
                if own is not None and ref in (*SERVICE_FIELDS[own_kind(own)], "port"):
                    continue
                if ref in COMMON_PLACEHOLDERS:
                    continue
                raise ConfigError(
                    f"{where}: unknown placeholder {{{ref}}}"
                    f"{did_you_mean(ref, COMMON_PLACEHOLDERS)}; write {{service.url}}-style"
                    " references or {{ for a literal brace"
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
            if service not in allowed:
                raise ConfigError(
                    f"{where}: uses {{{ref}}} but {own} does not depend on {service};"
                    f" add '{service}' to depends-on"
                )

    def own_kind(name: str) -> str:
        return config.services[name].kind

    everyone = list(config.services)
    for key, value in config.env.items():
        check(f"{TABLE}.env.{key}", value, None, everyone)
    for index, arg in enumerate(config.pytest_args):
        check(f"{TABLE}.pytest-args[{index}]", arg, None, everyone)
    for name, spec in config.services.items():
        where = f"{TABLE}.services.{name}"
        for key, value in spec.export.items():
            check(f"{where}.export.{key}", value, name, spec.depends_on)
        if isinstance(spec, CommandSpec):
            for key, value in spec.env.items():
                check(f"{where}.env.{key}", value, name, spec.depends_on)
            commands = [spec.command] if isinstance(spec.command, str) else spec.command
            for value in commands:
                check(f"{where}.command", value, name, spec.depends_on)
            if spec.ready is None and not spec.uses_port():
                raise ConfigError(
                    f'{where}: no readiness check; add ready = {{ http = "/health" }}'
                    " (or tcp, log, command), or use {port} so a TCP check applies"
                )


def _check_exports(config: Config) -> None:
    seen: dict[str, str] = {}
    for name, spec in config.services.items():
        names = list(spec.export)
        if spec.export_defaults:
            names += list(default_exports(name, spec.kind))
        for var in names:
            if var in seen and seen[var] != name:
                raise ConfigError(
                    f"{TABLE}.services.{name}.export: {var} is exported by {seen[var]} too;"
                    " rename one of them"
                )
            seen[var] = name
