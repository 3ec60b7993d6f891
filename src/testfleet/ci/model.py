"""What a generated CI file describes, independent of the CI system: the Python versions, the
shard count, the options of `testfleet run`, how testfleet is installed, the private indexes,
and which lint and type-check tools the project configures.

Everything here is read once from the project and the flags; the GitHub and GitLab writers
only turn it into their own syntax.
"""

from __future__ import annotations

import configparser
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testfleet import plan
from testfleet.ci.repository import Placement
from testfleet.errors import ConfigError
from testfleet.values import MAX_SHARDS, is_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_SHARDS = 2
DEFAULT_SHARD_TARGET = 300.0
DEFAULT_RUNNER = ("ubuntu-latest",)
SHARDS_DIR = ".testfleet/shards"
# The reusable workflow's service toggles (the names the workflows it replaces use) and the
# service kind each one starts through `testfleet run --with`.
SERVICE_TOGGLES: Mapping[str, str] = {
    "postgresql": "postgres",
    "mongodb": "mongodb",
    "valkey": "valkey",
    "nats": "nats",
    "vault": "vault",
}
INDEX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Tool:
    """A lint or type-check tool the project configures, and how to install it."""

    requirement: str  # the project's own requirement ("ruff>=0.6") or the bare name
    args: tuple[str, ...]  # what to check: () when the tool's config names the files


@dataclass(frozen=True)
class Settings:
    """One CI setup, as every generated file describes it. Paths are relative to the project
    unless named `*_in_repository`; `placement` says where the project sits in its
    repository. A generic setup (`generic`) belongs to no project: its callers choose."""

    command: str  # the `testfleet ci ...` command line that regenerates the file
    pythons: tuple[str, ...]
    shards: int
    notes: tuple[str, ...]  # how values were chosen, for the file's header
    pytest_args: str | None
    test_timeout: float | None
    indexes: tuple[str, ...]
    spec: str  # what `uv tool install` installs: pinned (ci/install.py)
    extras: tuple[str, ...]
    dependency_groups: tuple[str, ...]
    ruff: Tool | None
    mypy: Tool | None
    kinds: frozenset[str]  # the service kinds the project configures
    runs_on: tuple[str, ...]
    timeout_minutes: int
    placement: Placement
    durations: str  # the durations file
    junit_xml: str
    coverage_xml: str
    locked: bool  # the project has a uv.lock
    generic: bool = False

    @property
    def newest_python(self) -> str:
        return max(self.pythons, key=lambda v: tuple(int(p) for p in v.split(".")))

    def in_repository(self, relative: str) -> str:
        """A path of the project as seen from the repository's root (where CI runs a job)."""
        return self.placement.path(relative)

    @property
    def report_files(self) -> tuple[str, ...]:
        """What `testfleet merge` writes, kept as the merge job's artifact (the durations let
        the next split and `--shards auto` learn from CI's measurements)."""
        return tuple(
            self.in_repository(p) for p in (self.junit_xml, self.coverage_xml, self.durations)
        )

    @property
    def key_files(self) -> tuple[str, ...]:
        """The files a project's environment is made from: the cache keys follow them."""
        names = ("pyproject.toml", "uv.lock") if self.locked else ("pyproject.toml",)
        return tuple(self.in_repository(name) for name in names)

    def credential_variables(self) -> list[str]:
        """uv's env vars for every private index: username and password of each."""
        parts = ("USERNAME", "PASSWORD")
        return [f"{index_variable(name)}_{part}" for name in self.indexes for part in parts]

    def run_options(self) -> list[str]:
        """`testfleet run` arguments besides --shard and --python."""
        options = []
        if self.pytest_args is not None:
            options += ["--pytest-args", self.pytest_args]
        if self.test_timeout is not None:
            options += ["--test-timeout", number(self.test_timeout)]
        return options

    def ruff_command(self) -> str | None:
        """ruff as its own tool (it needs nothing of the project's), in the project's version."""
        if self.ruff is None:
            return None
        return shlex.join(
            ["uvx", "--from", self.ruff.requirement, "ruff", "check", *self.ruff.args]
        )

    def mypy_command(self) -> str | None:
        """mypy in the project's own environment (it needs the project's dependencies), with
        the extras and dependency groups testfleet's config names."""
        if self.mypy is None:
            return None
        argv = ["uv", "run"]
        for extra in self.extras:
            argv += ["--extra", extra]
        for group in self.dependency_groups:
            argv += ["--group", group]
        return shlex.join([*argv, "--with", self.mypy.requirement, "mypy", *self.mypy.args])


def number(value: float) -> str:
    """120.0 -> "120", 1.5 -> "1.5": as a user would type it."""
    return f"{value:g}" if value != int(value) else str(int(value))


def index_variable(name: str) -> str:
    """uv's env var prefix for an index: `UV_INDEX_<NAME>`, upper case, non-alphanumerics as _."""
    return "UV_INDEX_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def pick_pythons(
    flag: Sequence[str] | None, configured: Sequence[str]
) -> tuple[tuple[str, ...], str]:
    """The matrix's versions and where they came from: the flag, else `python` in
    [tool.testfleet] when it lists versions, else the interpreter running testfleet."""
    if flag:
        for version in flag:
            if not is_version(version):
                raise ConfigError(
                    f"--python {','.join(flag)}: CI installs Python by version, so list versions"
                    f" such as 3.11,3.12 (got {version!r})"
                )
        return tuple(flag), "--python"
    if configured and all(is_version(v) for v in configured):
        return tuple(configured), "python in [tool.testfleet]"
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (running,), (
        f"the Python running testfleet ({running}); set python = [...] in [tool.testfleet]"
        " or pass --python to choose"
    )


def auto_shards(
    measured: Mapping[str, float], target: float, group_by: plan.GroupBy
) -> tuple[int, str]:
    """The fewest shards whose planned time each stays under `target` seconds, from measured
    durations, planned the way `testfleet run --shard` splits (units, slowest first); and a
    line saying how it was chosen."""
    if not measured:
        return 1, (
            "--shards auto: no measured durations yet, so 1 shard; run the suite once"
            " (testfleet run, or download the merge job's durations.json) and regenerate"
        )
    nodeids = sorted(measured)
    units = plan.make_units(nodeids, plan.estimate(nodeids, measured), group_by)
    total = sum(unit.estimate for unit in units)
    limit = min(len(units), MAX_SHARDS)
    best_count, best_span = 1, total
    for count in range(1, limit + 1):
        span = max(lane.estimate for lane in plan.assign(units, count))
        if span < best_span - 1e-9:
            best_count, best_span = count, span
        if span <= target + 1e-9:
            return count, (
                f"--shards auto: {total:.0f} s measured in {len(units)} units; {count} shard(s)"
                f" keep each under {number(target)} s (longest ~{span:.0f} s)"
            )
    slowest = units[0]
    reason = (
        f"the slowest unit ({slowest.key}, {slowest.estimate:.0f} s) alone is over it"
        if slowest.estimate > target
        else f"at most {limit} shards"
    )
    return best_count, (
        f"--shards auto: {total:.0f} s measured in {len(units)} units; no split keeps each"
        f" under {number(target)} s ({reason}), so {best_count} shard(s), longest"
        f" ~{best_span:.0f} s"
    )


def _pyproject(root: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}  # the project was loaded from it already; nothing to add here


def _requirement(document: Mapping[str, Any], name: str) -> str:
    """The project's own requirement for `name` in its extras or dependency groups, so CI runs
    the version the project pins; else the bare name (the newest)."""
    project = document.get("project")
    extras = project.get("optional-dependencies", {}) if isinstance(project, dict) else {}
    groups = document.get("dependency-groups", {})
    lists = [*(extras.values() if isinstance(extras, dict) else ())]
    lists += [*(groups.values() if isinstance(groups, dict) else ())]
    for entries in lists:
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, str):
                continue  # {include-group = "..."}
            match = _REQUIREMENT_NAME.match(entry)
            if match and re.sub(r"[-_.]+", "-", match.group(1).lower()) == name:
                return entry.split(";", 1)[0].strip()
    return name


def _mypy_ini_has_files(path: Path) -> bool | None:
    """Whether an ini file's [mypy] section names `files`; None without a [mypy] section."""
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return None
    if not parser.has_section("mypy"):
        return None
    return parser.has_option("mypy", "files")


def find_tools(root: Path) -> tuple[Tool | None, Tool | None]:
    """ruff and mypy, each when the project configures it (in pyproject.toml or its own
    file); a tool the project does not configure gets no job."""
    document = _pyproject(root)
    tools = document.get("tool", {}) if isinstance(document.get("tool"), dict) else {}
    ruff = None
    if "ruff" in tools or (root / "ruff.toml").is_file() or (root / ".ruff.toml").is_file():
        ruff = Tool(_requirement(document, "ruff"), (".",))
    # mypy's own search order: mypy.ini, .mypy.ini, pyproject.toml, setup.cfg.
    files: bool | None = None
    for name in ("mypy.ini", ".mypy.ini"):
        if files is None and (root / name).is_file():
            files = _mypy_ini_has_files(root / name)
    mypy_table = tools.get("mypy")
    if files is None and isinstance(mypy_table, dict):
        files = "files" in mypy_table
    if files is None and (root / "setup.cfg").is_file():
        files = _mypy_ini_has_files(root / "setup.cfg")
    mypy = None
    if files is not None:
        mypy = Tool(_requirement(document, "mypy"), () if files else (".",))
    return ruff, mypy
