"""Coverage measurement of what a run starts: its lanes, the Python processes their tests
start, and its `command` services. Every process writes its own data file into the run's
coverage directory; the reports combine them (reports/coverage.py).

A run that measures prepares that directory before its stack starts; a `command` service
started for such a run measures itself. A running `up`'s servers are not measured: they were
started before the run and outlive it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testfleet.files import private_dir, write_private

DATA_DIR = "coverage"
# In the run's directory, beside (not in) the data directory, whose files are all combined.
EMPTY_SETTINGS = "coveragerc"
PROCESS_CONFIG = "coverage-process-config"
# What coverage.py's .pth file (coverage >= 7.10, installed with it) reads at every Python
# start-up: the settings to measure that process with.
PROCESS_VARIABLE = "COVERAGE_PROCESS_CONFIG"


@dataclass(frozen=True)
class Measurement:
    data_dir: Path  # every measured process writes its data file here
    settings: str  # the settings file every measured process reads


@contextlib.contextmanager
def in_directory(path: Path) -> Iterator[None]:
    """coverage.py resolves its settings, and relative paths in them, from the working
    directory, and prints paths relative to it."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def prepare(run_dir: Path, root: Path, settings: str) -> Measurement:
    """The run's coverage directory, and the settings its processes measure with: `settings`
    (the project's file, see reports/coverage.py), or an empty file of the run's when the
    project has none. coverage.py measures what a process starts (`patch = subprocess`) only
    when given a settings file; an empty one means its defaults, as no file does."""
    data_dir = private_dir(run_dir / DATA_DIR)
    if not settings:
        empty = run_dir / EMPTY_SETTINGS
        write_private(empty, "# coverage.py's defaults: the project has no coverage settings\n")
        settings = str(empty)
    import coverage
    from coverage.exceptions import CoverageException

    with in_directory(root):
        cov = coverage.Coverage(
            data_file=str(data_dir / ".coverage"), data_suffix=True, config_file=settings
        )
    # coverage < 7.10 has neither the options nor the serialized settings: servers are then
    # not measured (nor would that version's .pth exist to read them).
    with in_directory(root), contextlib.suppress(CoverageException, AttributeError):
        patches: list[str] = cov.get_option("run:patch") or []  # type: ignore[assignment]
        cov.set_option("run:patch", sorted({*patches, "subprocess"}))
        # Servers are stopped with SIGTERM: with this they save their data first.
        cov.set_option("run:sigterm", True)
        # Every server writes a file of its own (data_suffix=True does it for this object
        # alone, not for the settings handed on).
        cov.set_option("run:parallel", True)
        # Relative paths in the settings (`source`) are made absolute from the project's
        # directory, where the lanes measure too.
        write_private(run_dir / PROCESS_CONFIG, cov.config.serialize())
    return Measurement(data_dir, settings)


def process_environ(run_dir: Path) -> dict[str, str]:
    """The variables that make a Python process started for this run measure itself into its
    coverage directory, or none when the run does not measure. They take effect where
    coverage >= 7.10 is installed in the process's interpreter; elsewhere they do nothing."""
    try:
        config = (run_dir / PROCESS_CONFIG).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return {PROCESS_VARIABLE: config}
