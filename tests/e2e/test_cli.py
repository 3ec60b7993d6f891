"""The real CLI in a subprocess: exit codes, one-line errors, the example project, doctor."""

from __future__ import annotations

import re
from pathlib import Path

import junitparser
import pytest

from tests.helpers import EXAMPLE, run_cli, write_pyproject

pytestmark = pytest.mark.e2e


def test_example_project_passes_and_writes_junit(tmp_path: Path):
    junit = tmp_path / "junit.xml"
    result = run_cli("run", "--junit-xml", str(junit), cwd=EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "stack ready in" in result.stderr
    cases = [case for suite in junitparser.JUnitXml.fromfile(str(junit)) for case in suite]
    assert len(cases) >= 30
    assert all(case.is_passed for case in cases)


def test_failing_test_exits_1(tmp_path: Path):
    write_pyproject(tmp_path, "[tool.testfleet]\n[tool.testfleet.services.valkey]\n")
    (tmp_path / "test_x.py").write_text(
        "import os\ndef test_fails():\n    assert os.environ['VALKEY_URL'] == 'nope'\n"
    )
    result = run_cli("run", "--", "-q", "-p", "no:cacheprovider", cwd=tmp_path)
    assert result.returncode == 1
    assert "1 failed in" in result.stderr
    assert "AssertionError" in result.stderr  # the failure's traceback is in the summary


def test_config_error_is_one_line_exit_2(tmp_path: Path):
    write_pyproject(tmp_path, "[tool.testfleet.services.postgres]\nisolaton = 'server'\n")
    result = run_cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "testfleet: error: unknown key"
        " tool.testfleet.services.postgres.isolaton;"
        " did you mean 'isolation'?\n"
    )


def test_missing_binary_is_usage_error(tmp_path: Path):
    write_pyproject(tmp_path, "[tool.testfleet.services.nats]\nbinary = '/nonexistent/nats'\n")
    result = run_cli("up", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "binary: /nonexistent/nats is not an executable NATS binary" in result.stderr


def test_bad_flag_value_is_usage_error(tmp_path: Path):
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    result = run_cli("run", "--timeout", "soon", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--timeout" in result.stderr


def test_run_timeout_stops_pytest(tmp_path: Path):
    write_pyproject(tmp_path, "[tool.testfleet]\ntimeout = 2\n")
    (tmp_path / "test_slow.py").write_text("import time\ndef test_slow():\n    time.sleep(60)\n")
    result = run_cli("run", "--", "-p", "no:cacheprovider", cwd=tmp_path, timeout=30)
    assert result.returncode == 1
    assert "the run timed out after 2 s" in result.stderr


def test_service_failure_exits_3_with_log(tmp_path: Path):
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
    stack = float(re.search(r"stack ready in ([\d.]+) s", result.stderr).group(1))
    total = float(re.search(r"1 passed in ([\d.]+) s", result.stderr).group(1))
    assert stack >= 1.0
    assert total >= stack


@pytest.mark.parametrize(("system", "marker"), [("github", "jobs:"), ("gitlab", "stages:")])
def test_ci_files_come_from_the_cli(tmp_path: Path, system: str, marker: str):
    """`testfleet ci github|gitlab` is wired into the CLI and calls the laptop's command."""
    write_pyproject(tmp_path, "[tool.testfleet]\n[tool.testfleet.services.valkey]\n")
    result = run_cli("ci", system, "--stdout", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    assert "testfleet run --shard" in result.stdout
    assert "testfleet merge" in result.stdout


def test_postgres_without_its_driver_is_one_line(tmp_path: Path):
    """psycopg is a service driver in the postgres extra, not a core dependency: without it,
    a postgres service is a usage error naming the extra."""
    import subprocess
    import sys

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
