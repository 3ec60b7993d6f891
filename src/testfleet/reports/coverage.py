"""Coverage from every lane (and what its tests and its command services started), combined
into one data file, an XML report and a terminal table; `coverage-fail-under` decides the
exit code. A CI shard keeps its data for `testfleet merge`, which combines every shard's
(measured in other checkouts) and applies the threshold; a shard's own total is partial."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testfleet.errors import ConfigError
from testfleet.lanes.measure import in_directory
from testfleet.project import Project

if TYPE_CHECKING:
    import coverage


@dataclass(frozen=True)
class CoverageOutcome:
    total: float | None  # None: no lane saved any data
    table: str
    xml: Path | None  # None: no XML written (a shard's)
    data_file: Path
    fail_under: float | None
    # A CI shard's own share: information only, `testfleet merge` applies the threshold.
    partial: bool = False
    left_out: tuple[str, ...] = ()  # measured files that do not exist here

    @property
    def below(self) -> bool:
        return (
            not self.partial
            and self.fail_under is not None
            and (self.total or 0.0) < self.fail_under
        )

    @property
    def total_line(self) -> str:
        """The line a CI reads the total from: GitLab's `coverage:` regex (ci/gitlab.py) matches
        it, and it comes after coverage.py's table, whatever `[report]` made of that."""
        if self.partial:
            applies = (
                f" and applies coverage-fail-under {self.fail_under:g}%"
                if self.fail_under is not None
                else ""
            )
            return (
                f"coverage of this shard alone: {self.total or 0:.2f}% (partial: `testfleet"
                f" merge` combines every shard's{applies})"
            )
        return f"TOTAL coverage: {self.total or 0:.2f}%"


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


def pieces_in(folder: Path | None) -> list[str]:
    """The data files every measured process wrote into `folder`."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.glob(".coverage.*"))


def _threshold(project: Project, cov: coverage.Coverage) -> float | None:
    """`coverage-fail-under`, else the project's own `[report] fail_under` from its coverage
    settings (the same file the lanes measured with)."""
    if project.config.coverage_fail_under is not None:
        return project.config.coverage_fail_under
    own = cov.get_option("report:fail_under")
    return float(own) if isinstance(own, int | float) and own > 0 else None


def _with_roots(cov: coverage.Coverage, root: Path, roots: Sequence[str]) -> None:
    """Data measured in other checkouts (CI machines clone to different directories) is
    remapped to this one by coverage.py's own `[paths]`, after the project's own entries."""
    others = [r for r in dict.fromkeys(roots) if r and Path(r) != root]
    if others:
        own: dict[str, list[str]] = cov.get_option("paths") or {}  # type: ignore[assignment]
        paths = dict(own)
        paths["testfleet-shard-checkouts"] = [str(root), *others]
        cov.set_option("paths", paths)


def _report(
    cov: coverage.Coverage, *, xml: Path | None
) -> tuple[float | None, str, tuple[str, ...]]:
    """The total and the table (and the XML), or no total when nothing was measured; files
    measured that do not exist here (a module a test wrote to a temporary directory, a file
    outside the checkout of another CI machine) are left out rather than failing the report."""
    from coverage.exceptions import NoDataError

    measured = sorted(cov.get_data().measured_files())
    here = [f for f in measured if os.path.exists(f)]
    gone = tuple(f for f in measured if f not in here)
    if not here:
        return None, "", gone
    table = io.StringIO()
    try:
        total = cov.report(morfs=here, file=table)
        if xml is not None:
            cov.xml_report(morfs=here, outfile=str(xml))
    except NoDataError:
        return None, "", gone
    return total, table.getvalue(), gone


def combine(project: Project, lane_data: Path | None, roots: Sequence[str] = ()) -> CoverageOutcome:
    """Combine the data of a run (or of every shard, measured under `roots`) into
    `.testfleet/.coverage`, the XML report and the table, with the threshold to apply."""
    import coverage

    config = project.config
    data_file = project.path(".testfleet/.coverage")
    xml = project.path(config.coverage_xml)
    data_file.parent.mkdir(parents=True, exist_ok=True)
    xml.parent.mkdir(parents=True, exist_ok=True)
    pieces = pieces_in(lane_data)
    with in_directory(project.root):
        cov = coverage.Coverage(data_file=str(data_file), config_file=config_file(project.root))
        threshold = _threshold(project, cov)
        nothing = CoverageOutcome(None, "", xml, data_file, threshold)
        if not pieces:
            return nothing
        _with_roots(cov, project.root, roots)
        cov.combine(pieces, keep=False)
        cov.save()
        total, table, gone = _report(cov, xml=xml)
    return CoverageOutcome(total, table, xml, data_file, threshold, left_out=gone)


def gather(project: Project, lane_data: Path | None, data_file: Path) -> bool:
    """A CI shard's data, combined into one file of its directory for `testfleet merge` (the
    lanes' pieces are kept); False when no process saved any."""
    import coverage

    pieces = pieces_in(lane_data)
    if not pieces:
        return False
    data_file.parent.mkdir(parents=True, exist_ok=True)
    with in_directory(project.root):
        cov = coverage.Coverage(data_file=str(data_file), config_file=config_file(project.root))
        cov.combine(pieces, keep=True)
        cov.save()
    return True


def partial(project: Project, data_file: Path) -> CoverageOutcome:
    """The total of a CI shard's own data: its share only, so no threshold applies (merge
    applies it to every shard's)."""
    import coverage

    with in_directory(project.root):
        cov = coverage.Coverage(data_file=str(data_file), config_file=config_file(project.root))
        threshold = _threshold(project, cov)
        nothing = CoverageOutcome(None, "", None, data_file, threshold, partial=True)
        if not data_file.is_file():
            return nothing
        cov.load()
        total, table, gone = _report(cov, xml=None)
    return CoverageOutcome(total, table, None, data_file, threshold, partial=True, left_out=gone)
