"""Naming the test that breaks another (`--recheck`), and flaky tests (`--rerun-flaky`), end
to end: reruns in fresh lanes with fresh services, verdicts in the summary and the JUnit."""

from __future__ import annotations

from pathlib import Path

import junitparser
import pytest

from tests.helpers import run_cli, write_pyproject

pytestmark = pytest.mark.e2e

LEAKS_INTO_VALKEY = """
import os, redis

def cache():
    return redis.Redis.from_url(os.environ["VALKEY_URL"])

def test_a(): pass
def test_leaves_a_key_behind():
    cache().set("session", "stale")
def test_b(): pass
def test_expects_an_empty_cache():
    assert cache().get("session") is None
def test_c(): pass
def test_always_fails():
    assert 1 == 2
"""

FLAKY_ONCE = """
import pathlib

def test_flaky_once():
    marker = pathlib.Path(__file__).with_name("ran-once")
    if not marker.exists():
        marker.touch()
        raise AssertionError("first attempt fails")
"""


def properties(junit: Path) -> dict[str, dict[str, str]]:
    found = {}
    for suite in junitparser.JUnitXml.fromfile(str(junit)):
        for case in suite:
            props = case._elem.find("properties")  # junitparser has no API for these
            if props is not None:
                found[case.name] = {p.get("name"): p.get("value") for p in props}
    return found


def test_the_test_that_leaks_state_is_named(tmp_path: Path):
    """A test that leaves a key in its lane's Valkey breaks a later one: alone in a fresh
    lane it passes, and bisecting what ran before it names the leaking test."""
    write_pyproject(
        tmp_path, '[tool.testfleet]\norder = "pytest"\n[tool.testfleet.services.valkey]\n'
    )
    (tmp_path / "test_state.py").write_text(LEAKS_INTO_VALKEY)
    result = run_cli("run", "--recheck", "on", cwd=tmp_path, timeout=300)
    assert result.returncode == 1  # a verdict explains a failure; it does not excuse it
    assert (
        "order dependent: passes alone, fails after test_state.py::test_leaves_a_key_behind"
        in result.stderr
    )
    assert "fails alone too: not caused by other tests" in result.stderr
    verdicts = properties(tmp_path / ".testfleet" / "junit.xml")
    assert verdicts["test_expects_an_empty_cache"]["testfleet.verdict"].endswith(
        "fails after test_state.py::test_leaves_a_key_behind"
    )


def test_recheck_is_off_by_default_outside_ci(tmp_path: Path):
    write_pyproject(tmp_path, '[tool.testfleet]\norder = "pytest"\n')
    (tmp_path / "test_x.py").write_text("def test_fails(): assert False\n")
    quiet = run_cli("run", cwd=tmp_path, env={"CI": ""})
    assert "rechecking" not in quiet.stderr
    in_ci = run_cli("run", cwd=tmp_path, env={"CI": "true"})
    assert "rechecking 1 failed test(s) in fresh lanes" in in_ci.stderr
    assert "fails alone too" in in_ci.stderr


def test_rerun_flaky_passes_the_run_and_marks_the_test(tmp_path: Path):
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    (tmp_path / "test_flaky.py").write_text(FLAKY_ONCE)
    result = run_cli("run", "--rerun-flaky", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "FLAKY test_flaky.py::test_flaky_once" in result.stderr
    marks = properties(tmp_path / ".testfleet" / "junit.xml")["test_flaky_once"]
    assert marks["testfleet.flaky"] == "true"


def test_rerun_flaky_says_it_reruns_failed_tests(tmp_path: Path, own_run_base: Path):
    """`--rerun-flaky N` announces a rerun of the failed tests, up to N times each, not a
    recheck (which names the test that breaks another)."""
    write_pyproject(tmp_path, '[tool.testfleet]\nrecheck = "off"\n')
    (tmp_path / "test_flaky.py").write_text(FLAKY_ONCE)
    result = run_cli("run", "--rerun-flaky", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "rerunning 1 failed test(s) in fresh lanes, up to 2 time(s) each" in result.stderr
    assert "rechecking" not in result.stderr


def test_lanes_meeting_on_one_server_get_a_hint(tmp_path: Path):
    """A suite that creates a database of a fixed name: on one server shared by lanes the
    second lane's CREATE fails, and the summary says which setting keeps lanes apart."""
    write_pyproject(
        tmp_path,
        '[tool.testfleet]\ngroup-by = "test"\nrecheck = "off"\n'
        "[tool.testfleet.services.postgres]\n",
    )
    (tmp_path / "test_db.py").write_text(
        "import os, psycopg, pytest\n"
        "@pytest.mark.parametrize('i', range(2))\n"
        "def test_makes_its_database(i):\n"
        "    with psycopg.connect(os.environ['POSTGRES_URL'], autocommit=True) as conn:\n"
        "        conn.execute('CREATE DATABASE reports')\n"
    )
    result = run_cli("run", "-n", "2", cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    assert "1 failed, 1 passed" in result.stderr
    assert "some failures look like lanes meeting on one server (postgres" in result.stderr
    assert 'isolation = "server" gives every lane a server of its own' in result.stderr


def test_a_module_that_imports_only_after_another_is_named(tmp_path: Path):
    """`testfleet run tests/test_b_plugin.py`: that module needs another imported first.
    The collection error says which."""
    write_pyproject(
        tmp_path,
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n[tool.testfleet]\nrecheck = "on"\n',
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a_registry.py").write_text(
        "import builtins\nbuiltins.PLUGINS = {}\ndef test_registry(): pass\n"
    )
    (tmp_path / "tests" / "test_b_plugin.py").write_text(
        "PLUGINS['b'] = object()\ndef test_plugin(): assert 'b' in PLUGINS\n"
    )
    whole = run_cli("run", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr  # in pytest's order it imports fine
    alone = run_cli("run", "--", "tests/test_b_plugin.py", cwd=tmp_path)
    assert alone.returncode != 0
    assert (
        "collection depends on order: its module imports only after tests/test_a_registry.py"
        " (NameError: name 'PLUGINS' is not defined)" in alone.stderr
    )
