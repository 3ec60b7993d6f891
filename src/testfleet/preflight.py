"""Paths from the configuration, checked before anything starts.

A wrong interpreter, a report path that is a directory or a run directory that cannot be
created would otherwise surface after the stack started, or as an internal error at the end
of a run when its reports cannot be written. Each is one line naming the option, where its
value came from (flag, env var or pyproject.toml), and why it cannot work.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from testfleet.envvars import external_url, process_environ
from testfleet.errors import ConfigError
from testfleet.interpreter import default_interpreter
from testfleet.kinds import KINDS
from testfleet.project import Project
from testfleet.specs import TABLE, ServerSpec
from testfleet.values import is_version

# The files each command writes; `durations` is read by both `run` and `plan`.
WRITES: dict[str, tuple[str, ...]] = {
    "run": ("junit-xml", "durations", "coverage-xml"),
    "up": ("dotenv",),
    "plan": (),
}
READS: dict[str, tuple[str, ...]] = {"run": ("durations",), "plan": ("durations",), "up": ()}
USES_RUN_DIR = ("run", "up")


def check_paths(project: Project, command: str | None = None) -> None:
    """Refuse, with a ConfigError, any path `command` (run, up or plan) would trip over;
    without a command, every path any of them uses.

    Creates nothing that stays: whether a directory can be made is tried with a temporary
    directory, removed at once (as root, `os.access` says yes to nearly everything)."""
    _check_python(project)
    config = project.config
    values = {
        "junit-xml": config.junit_xml,
        "durations": config.durations,
        "coverage-xml": config.coverage_xml,
        "dotenv": config.dotenv,
    }
    commands = [command] if command is not None else list(WRITES)
    reads = {key for name in commands for key in READS.get(name, ())}
    writes = {key for name in commands for key in WRITES.get(name, ())}
    for key in sorted(reads - writes):
        _check_readable(project, key, values[key])
    for key in sorted(writes):
        if key == "coverage-xml" and not config.coverage:
            continue
        _check_writable(project, key, values[key])
    uses_run_dir = any(name in USES_RUN_DIR for name in commands)
    if uses_run_dir and config.run_dir is not None:
        _check_run_dir(project, config.run_dir)
    if uses_run_dir:
        check_drivers(project)
        check_external(project)
    if uses_run_dir and config.network == "namespace":
        from testfleet.netns import check_available

        if command == "up":
            raise ConfigError(
                'network = "namespace": up would serve its stack inside a namespace your shell'
                " cannot reach; run up with --network shared (or TESTFLEET_NETWORK=shared)"
            )
        check_available(f"{TABLE}.network")


def check_drivers(project: Project) -> None:
    """Every service's driver is installed next to testfleet (its readiness checks and lanes
    use it), found before anything starts."""
    for name, spec in project.config.services.items():
        kind = KINDS[spec.kind]
        for driver in kind.drivers:
            try:
                found = importlib.util.find_spec(driver) is not None
            except (ImportError, ValueError):  # a module set to None, a broken package
                found = False
            if not found:
                raise ConfigError(
                    f"{service_label(project, name)}: {kind.label} needs the {driver} driver"
                    f" next to testfleet; pip install 'testfleet[{kind.extra}]'"
                )


def service_label(project: Project, name: str) -> str:
    """How the user asked for a service: its table, or `--with postgres` (TESTFLEET_WITH)
    for one added from outside the file."""
    source = project.sources.get(f"services.{name}")
    if source is None:
        return f"{TABLE}.services.{name}"
    return f"{source} {name}" if source.startswith("-") else f"{source} ({name})"


def check_external(project: Project) -> None:
    """Every variable an external service's `url` (or token, password) reads is set."""
    for name, spec in project.config.services.items():
        if not isinstance(spec, ServerSpec) or spec.backend_name != "external":
            continue
        where = f"{TABLE}.services.{name}"
        for key in ("url", "token", "password"):
            value = getattr(spec, key, None)
            if isinstance(value, str):
                external_url(name, value, where, key=key)


def _label(project: Project, key: str, value: str) -> str:
    """How the user wrote it: `--python X`, `TESTFLEET_PYTHON=X` or `tool.testfleet.python`."""
    source = project.sources.get(key)
    if source is None:
        return f"{key} (default {value})"
    if source.startswith("-"):
        return f"{source} {value}"
    if source == "pyproject.toml":
        return f"{TABLE}.{key} = {value!r}"
    return f"{source}={value}"


def _check_python(project: Project) -> None:
    pythons = project.config.python
    if pythons is None or is_version(pythons[0]):
        return  # versions are found (or refused) when their environments are made
    configured = pythons[0]
    label = _label(project, "python", configured)
    unset = default_interpreter(project.root, os.environ)
    fix = (
        "point it at a Python with pytest installed, or leave it unset to use"
        f" {unset.path} ({unset.why})"
    )
    if "/" not in configured:
        # Lanes find a bare name on the PATH they run with, which starts with our own bin dir.
        search = process_environ(configured).get("PATH", "")
        if shutil.which(configured, path=search) is None:
            raise ConfigError(f"{label}: no interpreter named {configured!r} on PATH; {fix}")
        return
    path = project.path(configured)
    if not path.exists():
        raise ConfigError(f"{label}: no such interpreter ({path}); {fix}")
    if path.is_dir():
        raise ConfigError(
            f"{label}: {path} is a directory, not an interpreter (its bin/python?); {fix}"
        )
    if not os.access(path, os.X_OK):
        raise ConfigError(f"{label}: {path} is not executable; {fix}")


def _check_readable(project: Project, key: str, value: str) -> None:
    path = project.path(value)
    if path.is_dir():
        raise ConfigError(
            f"{_label(project, key, value)}: {path} is a directory; {key} must name a file"
        )


def _check_writable(project: Project, key: str, value: str) -> None:
    label = _label(project, key, value)
    path = project.path(value)
    if path.is_dir():
        raise ConfigError(f"{label}: {path} is a directory; {key} must name a file")
    if path.exists() and not path.is_file():
        # Reports are replaced atomically: a device or pipe there would be replaced by a file.
        raise ConfigError(f"{label}: {path} is not a regular file; choose a file path")
    problem = _cannot_create_in(path.parent)
    if problem:
        raise ConfigError(f"{label}: {problem}; choose a writable place")


def _check_run_dir(project: Project, value: str) -> None:
    label = _label(project, "run-dir", value)
    path = project.path(value)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{label}: {path} is not a directory; give a directory for run data"
            " (it is created when missing)"
        )
    problem = _cannot_create_in(path)
    if problem:
        raise ConfigError(f"{label}: {problem}; choose a writable directory")


def _cannot_create_in(directory: Path) -> str | None:
    """Why files cannot be made in `directory` (created on demand with its parents), or None."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == directory:
            return f"{directory} is not a directory"
        return f"{existing} is not a directory, so {directory} cannot be created"
    try:
        probe = tempfile.mkdtemp(prefix=".testfleet-probe-", dir=existing)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if existing == directory:
            return f"cannot create files in {directory} ({reason})"
        return f"cannot create {directory} under {existing} ({reason})"
    os.rmdir(probe)
    return None
