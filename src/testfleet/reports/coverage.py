"""Coverage from every lane (and what its tests started), combined into one data file, an
XML report and a terminal table; `coverage-fail-under` decides the exit code."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testfleet.errors import ConfigError
from testfleet.project import Project


@dataclass(frozen=True)
class CoverageOutcome:
    total: float | None  # None: no lane saved any data
    table: str
    xml: Path
    data_file: Path
    fail_under: float | None

    @property
    def below(self) -> bool:
        return self.fail_under is not None and (self.total or 0.0) < self.fail_under


@contextlib.contextmanager
def _in_directory(path: Path) -> Iterator[None]:
    """Coverage resolves its config and prints paths relative to the working directory."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def config_file(root: Path) -> str | bool:
    """The settings file coverage.py's own lookup from `root` would use, as an absolute path,
    or True when none applies; lanes and the combined report must both be given this.

    coverage.py takes `.coveragerc` (or `$COVERAGE_RCFILE`) as soon as it exists, but
    setup.cfg, tox.ini and pyproject.toml only when they hold coverage settings: a setup.cfg
    with just `[flake8]` must not hide `[tool.coverage]` in pyproject.toml. Its own code
    decides, so this cannot drift from the coverage.py version installed.
    """
    from coverage.config import CoverageConfig, config_files_to_try
    from coverage.exceptions import CoverageException

    for name, ours, specified in config_files_to_try(True):
        candidate = root / name  # an absolute $COVERAGE_RCFILE stays itself
        try:
            used = CoverageConfig().from_file(str(candidate), lambda _: None, our_file=ours)
        except CoverageException as exc:
            raise ConfigError(f"{candidate}: coverage.py cannot read it ({exc})") from None
        if used:
            return os.path.abspath(candidate)
        if specified:
            raise ConfigError(
                f"COVERAGE_RCFILE names {name}, which cannot be read from {root};"
                " fix or unset COVERAGE_RCFILE"
            )
    return True


def settings_path(root: Path) -> str:
    """The settings file lanes measure with (see config_file), or "" for coverage's defaults."""
    found = config_file(root)
    return found if isinstance(found, str) else ""


def combine(project: Project, lane_data: Path) -> CoverageOutcome:
    """Combine the lanes' data; the threshold is `coverage-fail-under`, else the project's own
    `[report] fail_under` from its coverage settings (the same file the lanes measured with)."""
    import coverage
    from coverage.exceptions import NoDataError

    config = project.config
    data_file = project.path(".testfleet/.coverage")
    xml = project.path(config.coverage_xml)
    data_file.parent.mkdir(parents=True, exist_ok=True)
    xml.parent.mkdir(parents=True, exist_ok=True)
    pieces = sorted(str(p) for p in lane_data.glob(".coverage.*")) if lane_data.is_dir() else []
    with _in_directory(project.root):
        cov = coverage.Coverage(data_file=str(data_file), config_file=config_file(project.root))
        own = cov.get_option("report:fail_under")
        threshold = config.coverage_fail_under
        if threshold is None and isinstance(own, int | float) and own > 0:
            threshold = float(own)
        if not pieces:
            return CoverageOutcome(None, "", xml, data_file, threshold)
        cov.combine(pieces, keep=False)
        cov.save()
        table = io.StringIO()
        try:
            total = cov.report(file=table)
            cov.xml_report(outfile=str(xml))
        except NoDataError:
            return CoverageOutcome(None, "", xml, data_file, threshold)
    return CoverageOutcome(total, table.getvalue(), xml, data_file, threshold)
