"""The real CLI in a subprocess, where it starts services or looks at the machine: exit codes,
the example project, timeouts, a failing service, doctor. User errors and the parser are
checked in-process, in tests/unit/test_cli_main.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import junitparser
import pytest

from tests.helpers import EXAMPLE, run_cli, write_pyproject

pytestmark = pytest.mark.e2e


def test_example_project_passes_and_writes_junit(tmp_path: Path):
    """The example project passes on its real services and its JUnit XML lists every test."""
    junit = tmp_path / "junit.xml"
    result = run_cli("run", "--junit-xml", str(junit), cwd=EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "stack ready in" in result.stderr
    cases = [case for suite in junitparser.JUnitXml.fromfile(str(junit)) for case in suite]
    assert len(cases) >= 30
    assert all(case.is_passed for case in cases)


def test_failing_test_exits_1(tmp_path: Path):
    """A failing test is exit 1, with its traceback in the summary."""
    write_pyproject(tmp_path, "[tool.testfleet]\n[tool.testfleet.services.valkey]\n")
    (tmp_path / "test_x.py").write_text(
        "import os\ndef test_fails():\n    assert os.environ['VALKEY_URL'] == 'nope'\n"
    )
    result = run_cli("run", "--", "-q", "-p", "no:cacheprovider", cwd=tmp_path)
    assert result.returncode == 1
    assert "1 failed in" in result.stderr
    assert "AssertionError" in result.stderr  # the failure's traceback is in the summary


def test_run_timeout_stops_pytest(tmp_path: Path):
    """The run's timeout stops a test that hangs, and the run says so with exit 1."""
    write_pyproject(tmp_path, "[tool.testfleet]\ntimeout = 2\n")
    (tmp_path / "test_slow.py").write_text("import time\ndef test_slow():\n    time.sleep(60)\n")
    result = run_cli("run", "--", "-p", "no:cacheprovider", cwd=tmp_path, timeout=30)
    assert result.returncode == 1
    assert "the run timed out after 2 s" in result.stderr


def test_service_failure_exits_3_with_log(tmp_path: Path):
    """A service that exits while starting is exit 3, with its own output in the message."""
    write_pyproject(
        tmp_path,
        (
            "[tool.testfleet.services.api]\nkind = 'command'\n"
            "command = \"echo 'cannot bind' >&2; exit 1 # {port}\"\n"
        ),
    )
    result = run_cli("run", cwd=tmp_path)
    assert result.returncode == 3
    assert "api (lane 1) exited with code 1 while starting" in result.stderr
    assert "    cannot bind" in result.stderr


def test_doctor_lists_backends(tmp_path: Path):
    """`doctor` has a line for every kind of service, docker, uv and the Pythons."""
    result = run_cli("doctor", cwd=tmp_path)
    assert result.returncode == 0
    for label in ("postgres", "valkey", "nats", "vault", "docker", "uv", "pythons"):
        assert any(line.startswith(label) for line in result.stdout.splitlines()), label


def test_summary_time_covers_the_whole_run(tmp_path: Path):
    """The "in X s" of the summary includes stack start-up (here a 1 s setup), not only the
    lanes' part."""
    write_pyproject(tmp_path, "[tool.testfleet.services.postgres]\nsetup = 'sleep 1'\n")
    (tmp_path / "test_x.py").write_text("def test_x(): pass\n")
    result = run_cli("run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ready = re.search(r"stack ready in ([\d.]+) s", result.stderr)
    passed = re.search(r"1 passed in ([\d.]+) s", result.stderr)
    assert ready is not None, result.stderr
    assert passed is not None, result.stderr
    stack, total = float(ready.group(1)), float(passed.group(1))
    assert stack >= 1.0
    assert total >= stack


def test_postgres_without_its_driver_is_one_line(tmp_path: Path):
    """psycopg is a service driver in the postgres extra, not a core dependency: without it,
    a postgres service is a usage error naming the extra."""
    # A process of its own: the driver is found missing only once `up` has opened its run
    # (run directory, reaper process, child subreaper), which an in-process test must not do.
    write_pyproject(tmp_path, "[tool.testfleet.services.postgres]\n")
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from testfleet.cli import main\n"
        "raise SystemExit(main(['up']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'testfleet[postgres]'" in result.stderr
    assert "Traceback" not in result.stderr
