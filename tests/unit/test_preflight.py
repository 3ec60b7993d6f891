"""Paths checked before anything starts: one line naming the option, its source and why."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from testfleet.errors import ConfigError
from testfleet.preflight import check_paths
from testfleet.project import Project, validate


def project(root: Path, table: dict[str, Any], sources: dict[str, str] | None = None) -> Project:
    return Project(root=root, config=validate(table), sources=sources or {})


def error_of(project: Project, command: str = "run") -> str:
    with pytest.raises(ConfigError) as info:
        check_paths(project, command)
    assert "\n" not in info.value.message
    return info.value.message


@pytest.mark.parametrize(
    ("source", "label"),
    [
        ("--python", "--python /missing"),
        ("TESTFLEET_PYTHON", "TESTFLEET_PYTHON=/missing"),
        ("pyproject.toml", "tool.testfleet.python = '/missing'"),
    ],
)
def test_missing_interpreter_names_its_source(tmp_path: Path, source: str, label: str):
    """A missing --python is named as the user gave it: flag, env var or pyproject key."""
    message = error_of(project(tmp_path, {"python": "/missing"}, {"python": source}))
    assert message.startswith(f"{label}: no such interpreter")
    assert sys.executable in message  # the fix: leave it unset to use this one


def test_interpreter_that_is_a_directory(tmp_path: Path):
    """A directory is not an interpreter."""
    message = error_of(project(tmp_path, {"python": str(tmp_path)}))
    assert "is a directory, not an interpreter" in message


def test_interpreter_that_is_not_executable(tmp_path: Path):
    """A file without an execute bit cannot run pytest."""
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    assert "is not executable" in error_of(project(tmp_path, {"python": str(script)}))


def test_interpreter_name_not_on_path(tmp_path: Path):
    """A bare name is looked up on PATH, as the lanes will."""
    message = error_of(project(tmp_path, {"python": "python9.99"}, {"python": "--python"}))
    assert message.startswith("--python python9.99: no interpreter named 'python9.99' on PATH")


def test_good_interpreters_pass(tmp_path: Path):
    """This interpreter, by path or by name on PATH, passes."""
    check_paths(project(tmp_path, {"python": sys.executable}))
    check_paths(project(tmp_path, {"python": Path(sys.executable).name}))


def test_report_path_that_is_a_directory(tmp_path: Path):
    """--junit-xml / names the flag and says a file is needed."""
    message = error_of(project(tmp_path, {"junit-xml": "/"}, {"junit-xml": "--junit-xml"}))
    assert message == "--junit-xml /: / is a directory; junit-xml must name a file"


def test_report_path_whose_parent_cannot_be_created(tmp_path: Path):
    """A parent that cannot be made (under /proc) is refused with the reason."""
    message = error_of(project(tmp_path, {"junit-xml": "/proc/x/y"}, {"junit-xml": "--junit-xml"}))
    assert message.startswith("--junit-xml /proc/x/y: cannot create /proc/x under /proc (")


def test_report_path_under_a_file(tmp_path: Path):
    """A parent that is a file is refused."""
    (tmp_path / "file").write_text("")
    message = error_of(project(tmp_path, {"durations": "file/durations.json"}))
    assert f"{tmp_path / 'file'} is not a directory" in message


def test_report_path_that_is_a_device(tmp_path: Path):
    """Reports are replaced atomically; a device there must not be replaced by a file."""
    assert "is not a regular file" in error_of(project(tmp_path, {"junit-xml": "/dev/null"}))


def test_coverage_xml_checked_only_with_coverage(tmp_path: Path):
    """coverage-xml matters only when coverage is on."""
    check_paths(project(tmp_path, {"coverage-xml": "/"}))
    message = error_of(project(tmp_path, {"coverage": True, "coverage-xml": "/"}))
    assert message.startswith("coverage-xml (default /): / is a directory")


def test_each_command_checks_what_it_uses(tmp_path: Path):
    """plan writes no report and up writes only the dotenv file: nothing else blocks them."""
    bad_reports = project(tmp_path, {"junit-xml": "/", "coverage": True, "coverage-xml": "/"})
    check_paths(bad_reports, "plan")
    check_paths(bad_reports, "up")
    check_paths(project(tmp_path, {"dotenv": "/"}), "run")
    assert "dotenv" in error_of(project(tmp_path, {"dotenv": "/"}), "up")


def test_plan_refuses_durations_directory(tmp_path: Path):
    """plan reads the durations file: a directory there is refused."""
    assert "durations must name a file" in error_of(project(tmp_path, {"durations": "."}), "plan")


def test_run_dir_that_is_a_file(tmp_path: Path):
    """--run-dir naming a file is refused."""
    (tmp_path / "passwd").write_text("")
    message = error_of(project(tmp_path, {"run-dir": "passwd"}, {"run-dir": "--run-dir"}))
    assert message.startswith(f"--run-dir passwd: {tmp_path / 'passwd'} is not a directory")


def test_run_dir_that_cannot_be_created(tmp_path: Path):
    """A run-dir nobody can create is refused, for up as for run."""
    message = error_of(
        project(tmp_path, {"run-dir": "/proc/x"}, {"run-dir": "TESTFLEET_RUN_DIR"}), "up"
    )
    assert message.startswith("TESTFLEET_RUN_DIR=/proc/x: cannot create /proc/x under /proc")


def test_checks_leave_nothing_behind(tmp_path: Path):
    """Preflight creates neither a missing run-dir nor the reports' folders."""
    table = {"run-dir": "new/deeper", "junit-xml": "reports/junit.xml", "coverage": True}
    check_paths(project(tmp_path, table))
    check_paths(project(tmp_path, {"dotenv": "env/dotenv"}), "up")
    assert list(tmp_path.iterdir()) == []


def test_without_a_command_every_path_is_checked(tmp_path: Path):
    """Called without a command, the check covers what run, up and plan use, dotenv too."""
    with pytest.raises(ConfigError, match=r"^dotenv \(default /\): / is a directory"):
        check_paths(project(tmp_path, {"dotenv": "/"}))
