"""coverage.py's settings file: found the way coverage.py finds it, for lanes and report alike."""

from __future__ import annotations

from pathlib import Path

import coverage
import pytest
from coverage import CoverageData

from testfleet.errors import ConfigError
from testfleet.project import Project, validate
from testfleet.reports.coverage import combine, config_file

FLAKE8_ONLY = "[flake8]\nmax-line-length = 100\n"


@pytest.fixture(autouse=True)
def no_rcfile_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COVERAGE_RCFILE", raising=False)


def fail_under(root: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """What coverage.py reads for report:fail_under when given config_file(root)."""
    monkeypatch.chdir(root)
    return coverage.Coverage(config_file=config_file(root)).get_option("report:fail_under")


def test_setup_cfg_without_coverage_settings_does_not_hide_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A setup.cfg with only [flake8] is passed over, as coverage.py passes it over, and
    [tool.coverage] in pyproject.toml is the one read."""
    (tmp_path / "setup.cfg").write_text(FLAKE8_ONLY)
    (tmp_path / "pyproject.toml").write_text("[tool.coverage.report]\nfail_under = 77\n")
    assert config_file(tmp_path) == str(tmp_path / "pyproject.toml")
    assert fail_under(tmp_path, monkeypatch) == 77


@pytest.mark.parametrize(
    ("files", "chosen", "expected"),
    [
        ({".coveragerc": "", "setup.cfg": "[coverage:report]\nfail_under = 5\n"}, ".coveragerc", 0),
        ({"setup.cfg": "[coverage:report]\nfail_under = 5\n", "tox.ini": ""}, "setup.cfg", 5),
        (
            {"setup.cfg": FLAKE8_ONLY, "tox.ini": "[coverage:report]\nfail_under = 6\n"},
            "tox.ini",
            6,
        ),
        ({"pyproject.toml": "[tool.ruff]\nline-length = 100\n", "setup.cfg": FLAKE8_ONLY}, None, 0),
    ],
)
def test_lookup_follows_coverage_order(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    chosen: str | None,
    expected: int,
):
    """`.coveragerc` wins whenever it exists; the shared files count only with coverage
    settings; with none of them coverage.py's default lookup (True) is left to itself."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert config_file(tmp_path) == (str(tmp_path / chosen) if chosen else True)
    assert fail_under(tmp_path, monkeypatch) == expected


def test_coverage_rcfile_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """$COVERAGE_RCFILE is used as coverage.py uses it, also relative to the project, and a
    file it names that cannot be read is a config error naming the variable."""
    (tmp_path / ".coveragerc").write_text("[report]\nfail_under = 1\n")
    (tmp_path / "ci.rc").write_text("[report]\nfail_under = 88\n")
    monkeypatch.setenv("COVERAGE_RCFILE", "ci.rc")
    assert config_file(tmp_path) == str(tmp_path / "ci.rc")
    assert fail_under(tmp_path, monkeypatch) == 88
    monkeypatch.setenv("COVERAGE_RCFILE", str(tmp_path / "missing.rc"))
    with pytest.raises(ConfigError, match=r"COVERAGE_RCFILE names .*missing\.rc"):
        config_file(tmp_path)


def test_broken_settings_file_is_a_config_error_naming_it(tmp_path: Path):
    """A settings file coverage.py cannot parse is named in a config error."""
    (tmp_path / "pyproject.toml").write_text("[tool.coverage.report\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml: coverage\.py cannot read it"):
        config_file(tmp_path)


def test_combine_reads_pyproject_behind_a_flake8_setup_cfg(tmp_path: Path):
    """The combined report applies [tool.coverage] from pyproject.toml (here: omit b.py)
    although a setup.cfg for flake8 exists."""
    (tmp_path / "setup.cfg").write_text(FLAKE8_ONLY)
    (tmp_path / "pyproject.toml").write_text('[tool.coverage.report]\nomit = ["b.py"]\n')
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text("x = 1\ny = 2\n")
    lane_data = tmp_path / "lanes"
    lane_data.mkdir()
    data = CoverageData(basename=str(lane_data / ".coverage.lane1"))
    data.add_lines({str(tmp_path / "a.py"): [1, 2], str(tmp_path / "b.py"): [1]})
    data.write()
    outcome = combine(Project(tmp_path, validate({})), lane_data)
    assert outcome.total == 100.0
    assert "b.py" not in outcome.table
