"""A project: its root and its validated `Config`, read from pyproject.toml with the env vars
and flags layered on it (pyproject.toml < TESTFLEET_* env vars < command-line flags), and the
services of `--with` added to the declared ones. Every value remembers its source, so an
error can name where to fix it, and every problem is one line."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from testfleet import config_rules
from testfleet.ci.config import CiSettings
from testfleet.config import SPEC_BY_KIND, Config
from testfleet.errors import ConfigError, did_you_mean
from testfleet.interpreter import OWN, Interpreter, default_interpreter
from testfleet.kinds import KINDS
from testfleet.kinds.base import env_prefix
from testfleet.kinds.command.spec import ReadyCheck
from testfleet.options import OPTIONS, Option
from testfleet.specs import TABLE, ServiceSpec
from testfleet.values import is_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
WITH = next(option for option in OPTIONS if option.key == "with")
# Options that are no key of the table, so never suggested as one.
FLAGS_ONLY = frozenset(option.key for option in OPTIONS if option.not_a_key is not None)


@dataclass(frozen=True)
class Project:
    """A loaded project: where it lives and its validated configuration."""

    root: Path
    config: Config
    sources: Mapping[str, str] = field(default_factory=dict)
    # [tool.testfleet] as the file has it, before env vars and flags replaced any value.
    table: Mapping[str, Any] = field(default_factory=dict)

    @property
    def python(self) -> str:
        """The interpreter that runs pytest when one is named: a path relative to the project,
        a name on PATH; unset, the project's environment (interpreter.py); versions for uv:
        the one running testfleet (the environments are made later)."""
        return self.interpreter.path

    @functools.cached_property
    def interpreter(self) -> Interpreter:
        """`python` and why it is that one, as the run's first line says it."""
        configured = self.config.python
        if configured is None:
            return default_interpreter(self.root, os.environ)
        if is_version(configured[0]):
            return Interpreter(sys.executable, OWN)
        source = self.sources.get("python", "pyproject.toml")
        why = f"python in [{TABLE}]" if source == "pyproject.toml" else source
        if "/" not in configured[0]:
            return Interpreter(configured[0], why)
        # Not resolved: a venv's bin/python is a link to its base interpreter, and following
        # it would leave the venv behind.
        return Interpreter(os.path.abspath(self.root / configured[0]), why)

    def path(self, relative: str) -> Path:
        """A path from the config, relative to the project root."""
        return (self.root / relative).resolve()


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
    """Read pyproject.toml, apply the env and CLI layers, validate once."""
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
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: {TABLE} must be a table")
    raw, sources = layer(table or {}, cli or {}, environ if environ is not None else {})
    # --with alone makes a configuration: every other option has its default.
    if table is None and not raw.get("with"):
        raise ConfigError(
            f"{pyproject} has no [{TABLE}] table; add one (see the README's example), or name"
            " the services to start with --with postgres,valkey (or TESTFLEET_WITH)"
        )
    config = validate(raw, sources, table or {})
    return Project(root=pyproject.parent, config=config, sources=sources, table=table or {})


def layer(
    table: Mapping[str, Any], cli: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge file < env < CLI for the options declared in `testfleet.options`, then add the
    services of `--with`."""
    raw = dict(table)
    sources = {key: "pyproject.toml" for key in raw}
    for option in OPTIONS:
        if option.not_a_key is not None and option.key in table:
            raise ConfigError(
                f"{TABLE}.{option.key}: only {option.flag} and {option.env} set it, for a run"
                f" that adds to the file; in pyproject.toml {option.not_a_key}"
            )
        if option.env in environ:
            raw[option.key] = _parse_option(option, environ[option.env], option.env)
            sources[option.key] = option.env
        if cli.get(option.key) is not None:
            raw[option.key] = cli[option.key]
            sources[option.key] = option.flag
    extra_args = cli.get("extra_pytest_args")
    if extra_args:
        raw["pytest-args"] = [*raw.get("pytest-args", []), *extra_args]
    if raw.get("with"):
        raw["services"] = with_services(raw, sources)
    return raw, sources


def with_services(raw: Mapping[str, Any], sources: dict[str, str]) -> Any:
    """The declared services and, after them, one of each kind `--with` names that none of
    them is: named after its kind, with its defaults, so that it exports the kind's usual
    variables (POSTGRES_URL, VALKEY_URL, ...). Each added service's source is noted as
    `services.NAME`, for messages that would otherwise name a table the file does not have."""
    services = raw.get("services", {})
    if not isinstance(services, dict):
        return services  # validate says what is wrong with it
    source = sources.get("with", "--with")
    kinds = _parse_option(WITH, raw["with"], source)
    declared = {
        name: spec.get("kind", name) if isinstance(spec, dict) else name
        for name, spec in services.items()
    }
    added = dict(services)
    for kind in kinds:
        if kind in declared.values():
            continue  # the declared one is used, with its settings and its variables
        label = f"{source} {kind}" if source.startswith("-") else f"{source}={','.join(kinds)}"
        if kind in declared:
            raise ConfigError(
                f"{label}: {TABLE}.services.{kind} is a {declared[kind]} service, and an added"
                f" {KINDS[kind].label} service would take its name; rename that one, or"
                f" declare the {KINDS[kind].label} service yourself under another name"
            )
        added[kind] = {"kind": kind, **_external_keys(kind, raw)}
        sources[f"services.{kind}"] = source
    return added


def _external_keys(kind: str, raw: Mapping[str, Any]) -> dict[str, str]:
    """On the external backend an added service reaches the server that the variables it
    would export name (`--backend external --with postgres` reads $POSTGRES_URL, vault
    $VAULT_ADDR and $VAULT_TOKEN): what a CI service container is usually given as."""
    if raw.get("backend") != "external":
        return {}
    record = KINDS[kind]
    variable: dict[str, str] = {}  # a field's placeholder -> the first variable exporting it
    for name, template in record.exports_for(kind).items():
        variable.setdefault(template, name)
    url = variable.get("{url}") or variable.get("{addr}") or f"{env_prefix(kind)}_URL"
    keys = {"url": url}
    for key in record.external_keys:
        keys[key] = variable.get(f"{{{key}}}", f"{env_prefix(kind)}_{key.upper()}")
    return {key: f"{{env.{name}}}" for key, name in keys.items()}


def _parse_option(option: Option, text: Any, source: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}={text!r}: {exc}") from None


def validate(
    raw: Mapping[str, Any],
    sources: Mapping[str, str] | None = None,
    table: Mapping[str, Any] | None = None,
) -> Config:
    """Validate a raw `[tool.testfleet]` table; every problem becomes one ConfigError line.
    `table`: the file's own, when env vars and flags were layered on it (`raw`)."""
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
    hint = config_rules.namespace_hint_for(config, sources, table or {})
    config_rules.check(config, namespace_hint=hint)
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
    if loc[0] == "ci" and len(loc) == 2:
        return CiSettings
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
        names = [name for name in names if name not in FLAGS_ONLY]
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
