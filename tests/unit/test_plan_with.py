"""`testfleet plan --with KINDS` in-process: a project with no [tool.testfleet] is planned on
the lanes the added services allow (the suite is collected without services)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testfleet.cli import main
from testfleet.options import OPTIONS
from testfleet.values import MAX_LANES
from tests.helpers import write_pyproject


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with only [project] in its pyproject.toml, and two test modules; the
    TESTFLEET_* variables of the shell running the tests are not read."""
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    write_pyproject(tmp_path, "")
    for name in "ab":
        (tmp_path / f"test_{name}.py").write_text("def test_x(): pass\n")
    return tmp_path


def first_line(capsys: pytest.CaptureFixture[str], project: Path, *args: str) -> str:
    code = main(["-C", str(project), "plan", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.splitlines()[0]


def test_plan_with_services_counts_them_for_auto_lanes(
    bare: Path, capsys: pytest.CaptureFixture[str]
):
    """lanes = "auto" gives two lanes a core once --with adds a service, as for declared ones."""
    cores = os.cpu_count() or 1
    line = first_line(capsys, bare, "--with", "valkey", "-n", "auto")
    assert line.startswith("2 tests in 2 units")
    assert f"on {min(2 * cores, MAX_LANES)} lane(s)" in line


def test_plan_with_a_shared_server_is_capped_by_its_slots(
    bare: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """An added Valkey on the external backend shares one server by DB number: at most 16
    lanes, from TESTFLEET_WITH as from the flag."""
    monkeypatch.setenv("TESTFLEET_WITH", "valkey")
    monkeypatch.setenv("VALKEY_URL", "redis://127.0.0.1:1/0")
    line = first_line(capsys, bare, "--backend", "external", "-n", "16")
    assert "on 16 lane(s)" in line
    assert main(["-C", str(bare), "plan", "--backend", "external", "-n", "17"]) == 2
    assert "at most 16 lanes (this run has 17)" in capsys.readouterr().err
