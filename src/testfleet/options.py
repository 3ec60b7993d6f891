"""Every option of the commands, declared once: a field of `Options` whose `Opt` carries its
help, the commands that read it, its parser and its flag. Its `[tool.testfleet]` key, env var
(`TESTFLEET_<KEY>`), default and choices come from the field itself. The commands' parsers,
the env layer and the config's layering all derive from `OPTIONS`; `Config` (config.py) is
`Options` plus the services and the `env` table.

A command that does not read an option does not take its flag (`testfleet up --shard 1/2` is
a usage error naming the commands that do); the env vars and keys make one configuration that
every command sees.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from testfleet import values
from testfleet.kinds import ALIASES, SERVER_KINDS
from testfleet.specs import TABLE, Model
from testfleet.values import MAX_LANES, argument_type

RUN, PLAN, UP, MERGE = "run", "plan", "up", "merge"


@dataclass(frozen=True)
class Opt:
    """An option's declaration, attached to its field. `parse` reads a flag's or env var's
    text as well as a TOML value (None: one of the field's `Literal` choices); `shown` is how
    `--help` names the default when the field's own default says nothing (None); `not_a_key`:
    the option is a flag and an env var only, and this is what pyproject.toml says instead."""

    help: str
    commands: tuple[str, ...]
    parse: Callable[[Any], Any] | None = None
    metavar: str = "VALUE"
    short: str | None = None
    shown: str | None = None
    not_a_key: str | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        # The option's own parser runs first, so that the file, env vars and flags share one
        # rule and one message (bool refused for numbers, the lanes bound, ...).
        parse = self.parse or values.one_of(choices_of(source))
        return core_schema.no_info_before_validator_function(parse, handler(source))


class Options(Model):
    """The options, in the order `--help` lists them."""

    lanes: Annotated[
        int | Literal["auto"],
        Opt(
            f"parallel lanes (1 to {MAX_LANES}), each with its own services; 'auto' (see docs)",
            (RUN, PLAN, UP),
            values.lanes,
            "N",
            short="-n",
        ),
    ] = 1
    timeout: Annotated[
        float | None,
        Opt("stop the whole run after this many seconds", (RUN,), values.seconds, "SECONDS"),
    ] = None
    test_timeout: Annotated[
        float | None,
        Opt(
            "fail a test running longer than this, kill and replace its lane",
            (RUN,),
            values.seconds,
            "SECONDS",
        ),
    ] = None
    group_by: Annotated[
        Literal["module", "class", "test"],
        Opt("what a lane runs together", (RUN, PLAN), metavar="SCOPE"),
    ] = "module"
    order: Annotated[
        Literal["auto", "duration", "pytest"],
        Opt(
            "hand out units slowest first (duration) or in file order (pytest); auto: pytest's"
            " order with one lane, duration with more",
            (RUN, PLAN),
            metavar="ORDER",
        ),
    ] = "auto"
    backend: Annotated[
        Literal["native", "docker", "external"],
        Opt(
            "where services run unless they say otherwise: native processes, docker"
            " containers, or external servers already running",
            (RUN, PLAN, UP),
            metavar="BACKEND",
        ),
    ] = "native"
    network: Annotated[
        Literal["shared", "namespace"],
        Opt(
            "namespace gives each lane a network namespace (its own 127.0.0.1), so servers and"
            " a suite's fixed ports meet only their lane's; shared is one network for all",
            (RUN, PLAN, UP),
            metavar="MODE",
        ),
    ] = "shared"
    with_: Annotated[
        tuple[str, ...],
        Field(alias="with"),
        Opt(
            "start these service kinds too, each with its defaults and its usual env vars"
            f" (POSTGRES_URL, ...), besides the services of [{TABLE}]: a kind declared there"
            f" is not added again ({', '.join(SERVER_KINDS)}; postgresql for postgres)",
            (RUN, PLAN, UP),
            values.kinds(
                SERVER_KINDS,
                ALIASES,
                {
                    "command": "a command service needs its command: declare it in"
                    f' pyproject.toml as [{TABLE}.services.NAME] with kind = "command"'
                },
            ),
            "KINDS",
            # A file's list would be replaced by the flag's or the env var's, dropping the
            # file's services with it; a declared service is never overridden.
            not_a_key=f"declare each service instead: [{TABLE}.services.postgres] (an empty"
            " table starts it with its defaults)",
        ),
    ] = ()
    recheck: Annotated[
        Literal["auto", "on", "off"],
        Opt(
            "run each failed test again alone in a fresh lane and, when it passes there, name"
            " the earlier test that makes it fail; auto: in CI, when at most 5 failed",
            (RUN,),
            values.recheck,
            "MODE",
        ),
    ] = "auto"
    rerun_flaky: Annotated[
        int,
        Opt(
            "rerun a failed test alone up to N times; one that then passes counts as passed"
            " and is reported flaky",
            (RUN,),
            values.reruns,
            "N",
        ),
    ] = 0
    durations: Annotated[
        str,
        Opt("the durations file, merged on every run", (RUN, PLAN, MERGE), values.path, "PATH"),
    ] = ".testfleet/durations.json"
    coverage: Annotated[
        bool,
        Opt("measure coverage in every lane and combine it", (RUN,), values.switch),
    ] = False
    coverage_fail_under: Annotated[
        float | None,
        Opt(
            "fail when total coverage is lower (percent)",
            (RUN, MERGE),
            values.percent,
            "PERCENT",
            shown="the project's own [report] fail_under, if any",
        ),
    ] = None
    coverage_xml: Annotated[
        str,
        Opt("where to write the combined coverage XML", (RUN, MERGE), values.path, "PATH"),
    ] = ".testfleet/coverage.xml"
    junit_xml: Annotated[
        str, Opt("where to write the JUnit XML report", (RUN, MERGE), values.path, "PATH")
    ] = ".testfleet/junit.xml"
    dotenv: Annotated[
        str,
        Opt(
            "the dotenv file `up` writes its env to (a run finds the up beside it)",
            (RUN, UP),
            values.path,
            "PATH",
        ),
    ] = ".testfleet/env"
    run_dir: Annotated[
        str | None,
        Opt(
            "where run data lives",
            (RUN, UP),
            values.path,
            "DIR",
            shown="/dev/shm/testfleet-UID when /dev/shm is writable and has room, else"
            " $TMPDIR/testfleet-UID",
        ),
    ] = None
    python: Annotated[
        tuple[str, ...] | None,
        Opt(
            "Python versions to run on, each in an environment made with uv (3.11,3.12), or"
            " the interpreter that runs pytest",
            (RUN, PLAN, UP),
            values.pythons,
            "VERSIONS|PATH",
            shown="the project's environment ($VIRTUAL_ENV, else its .venv), else the"
            " interpreter running testfleet",
        ),
    ] = None
    extras: Annotated[
        tuple[str, ...],
        Opt(
            "extras of the project to install in the environments uv makes (test,dev)",
            (RUN, PLAN),
            values.names,
            "NAMES",
        ),
    ] = ()
    dependency_groups: Annotated[
        tuple[str, ...],
        Opt(
            "dependency groups (PEP 735) to install in the environments uv makes",
            (RUN, PLAN),
            values.names,
            "NAMES",
        ),
    ] = ()
    shard: Annotated[
        str | None,
        Opt(
            "run shard I of M (one CI machine's share), written to .testfleet/shards",
            (RUN, PLAN),
            values.shard,
            "I/M",
        ),
    ] = None
    pytest_args: Annotated[
        tuple[str, ...],
        Opt("arguments always passed to pytest", (RUN, PLAN), values.arguments, "ARGS"),
    ] = ()
    own_stack: Annotated[
        bool,
        Opt(
            "start the run's own stack even when a `testfleet up` of the project is running",
            (RUN,),
            values.switch,
        ),
    ] = False


def choices_of(annotation: Any) -> tuple[str, ...]:
    """The strings a `Literal` (or an optional one) allows; () for any other type, such as
    `int | Literal["auto"]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        parts = [choices_of(arg) for arg in args]
        return () if not all(parts) else tuple(c for part in parts for c in part)
    if origin is Literal:
        return tuple(str(arg) for arg in typing.get_args(annotation))
    return ()


@dataclass(frozen=True)
class Option:
    """One option as the parsers and the layering see it, derived from its field."""

    key: str  # the [tool.testfleet] key
    help: str
    parse: Callable[[Any], Any]
    default: Any
    commands: tuple[str, ...]
    metavar: str
    short: str | None
    switch: bool  # a flag without a value: --coverage
    choices: tuple[str, ...]
    shown: str | None
    not_a_key: str | None  # set: a flag and an env var only, refused in pyproject.toml

    @property
    def flag(self) -> str:
        return f"--{self.key}"

    @property
    def flags(self) -> str:
        """How argparse and error messages name it: `-n/--lanes`."""
        return f"{self.short}/{self.flag}" if self.short else self.flag

    @property
    def env(self) -> str:
        return "TESTFLEET_" + self.key.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.key.replace("-", "_")

    @property
    def default_text(self) -> str:
        """The default as `--help` shows it."""
        if self.shown is not None:
            return self.shown
        if self.default is None or self.default == ():
            return "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)


def _derive() -> tuple[Option, ...]:
    options = []
    for name, field in Options.model_fields.items():
        opt = next(item for item in field.metadata if isinstance(item, Opt))
        choices = choices_of(field.annotation)
        options.append(
            Option(
                key=field.alias or name,
                help=opt.help,
                parse=opt.parse or values.one_of(choices),
                default=field.default,
                commands=opt.commands,
                metavar=opt.metavar,
                short=opt.short,
                switch=field.annotation is bool,
                choices=choices,
                shown=opt.shown,
                not_a_key=opt.not_a_key,
            )
        )
    return tuple(options)


OPTIONS: tuple[Option, ...] = _derive()


def options_of(command: str) -> tuple[Option, ...]:
    """The options `command` reads, in declaration order."""
    return tuple(option for option in OPTIONS if command in option.commands)


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of the options `command` reads, each with its default and env var in its
    help; a flag not given is None, so the env var or pyproject.toml decide."""
    for option in options_of(command):
        names = [option.short, option.flag] if option.short else [option.flag]
        if option.switch:
            parser.add_argument(
                *names, dest=option.dest, action="store_const", const=True, help=help_of(option)
            )
        else:
            parser.add_argument(
                *names,
                dest=option.dest,
                metavar=option.metavar,
                type=argument_type(option.parse),
                help=help_of(option),
            )


def help_of(option: Option) -> str:
    choices = f" ({', '.join(option.choices)})" if option.choices else ""
    # argparse formats help with %: a literal percent sign must be doubled.
    text = f"{option.help}{choices}; default: {option.default_text}; env {option.env}"
    return text.replace("%", "%%")
