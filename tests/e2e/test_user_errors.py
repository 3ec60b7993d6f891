"""User mistakes through the real CLI, as a user sees them: one line `testfleet: error: ...` on
stderr and exit code 2 from the process, even though `run` starts lane 1's interpreter before
it parses anything. Every other mistake is checked in-process, in tests/unit/test_cli_main.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli, write_pyproject

pytestmark = pytest.mark.e2e

LANES_RULE = 'must be a whole number of lanes from 1 to 64, or "auto"'


def test_bad_flag_is_one_line_exit_2(tmp_path: Path):
    """A flag value argparse refuses is exactly one stderr line and exit 2 from the process."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    result = run_cli("run", "-n", "abc", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"testfleet: error: argument -n/--lanes: {LANES_RULE} (got 'abc')"
        " (see testfleet run --help)\n"
    )
    assert result.stdout == ""


def test_bad_env_var_is_one_line_exit_2(tmp_path: Path):
    """A TESTFLEET_* variable from the process's environment is checked like its flag."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    result = run_cli("run", cwd=tmp_path, env={"TESTFLEET_LANES": "many"}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"testfleet: error: TESTFLEET_LANES='many': {LANES_RULE}\n"
    assert result.stdout == ""
