"""Coverage from every lane (and what its tests started), combined into one data file, an
XML report and a terminal table; `coverage-fail-under` decides the exit code."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testfleet.config import Project


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


def _config_file(root: Path) -> str | bool:
    for name in (".coveragerc", "setup.cfg", "tox.ini", "pyproject.toml"):
        if (root / name).exists():
            return str(root / name)
    return True


def combine(project: Project, lane_data: Path) -> CoverageOutcome:
    import coverage
    from coverage.exceptions import NoDataError

    config = project.config
    data_file = project.path(".testfleet/.coverage")
    xml = project.path(config.coverage_xml)
    data_file.parent.mkdir(parents=True, exist_ok=True)
    xml.parent.mkdir(parents=True, exist_ok=True)
    pieces = sorted(str(p) for p in lane_data.glob(".coverage.*")) if lane_data.is_dir() else []
    if not pieces:
        return CoverageOutcome(None, "", xml, data_file, config.coverage_fail_under)
    with _in_directory(project.root):
        cov = coverage.Coverage(data_file=str(data_file), config_file=_config_file(project.root))
        cov.combine(pieces, keep=False)
        cov.save()
        table = io.StringIO()
        try:
            total = cov.report(file=table)
            cov.xml_report(outfile=str(xml))
        except NoDataError:
            return CoverageOutcome(None, "", xml, data_file, config.coverage_fail_under)
    return CoverageOutcome(total, table.getvalue(), xml, data_file, config.coverage_fail_under)
