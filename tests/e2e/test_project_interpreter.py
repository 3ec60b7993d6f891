"""testfleet installed outside the project runs the project's tests with the project's
environment, says so on the first line, and names that interpreter when a lane cannot import;
an up's env file, sourced, changes no option of a later command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import run_cli, start_cli, wait_until_up, write_pyproject


@pytest.fixture(autouse=True)
def no_active_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's .venv decides, not an environment the test runner happens to have."""
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.delenv("UV_PROJECT_ENVIRONMENT", raising=False)


def project_venv(root: Path) -> Path:
    """A real venv in the project's .venv (another interpreter than the one running testfleet),
    with pytest reachable through a .pth file naming this environment's site-packages."""
    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python*/site-packages")
    (site / "tools.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_lanes_run_the_projects_venv_and_the_first_line_says_so(
    tmp_path: Path, own_run_base: Path
) -> None:
    """No `python` setting, a project .venv: both lanes' pytest runs in it (sys.prefix), and
    the run's first line names it and why."""
    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\n")
    venv = project_venv(root)
    tests = root / "tests"
    tests.mkdir()
    for name in ("a", "b"):
        (tests / f"test_{name}.py").write_text(
            "import os, sys\n\n"
            f"def test_{name}():\n"
            f"    assert os.path.realpath(sys.prefix) == {str(venv.resolve())!r}\n"
        )
    result = run_cli("run", "-n", "2", cwd=root, timeout=180)
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    version = ".".join(map(str, sys.version_info[:3]))
    assert f"; python .venv/bin/python ({version}, the project's .venv); run " in first, first
    assert list(own_run_base.iterdir()) == []


def test_a_lane_that_cannot_import_names_its_interpreter_and_the_setting(
    tmp_path: Path, own_run_base: Path
) -> None:
    """A conftest importing what the environment lacks ends the lane before it collects:
    the one-line error names the interpreter it ran and `python = ...` / `--python`."""
    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\n")
    project_venv(root)
    (root / "conftest.py").write_text("import django_is_not_installed_here\n")
    (root / "test_a.py").write_text("def test_a():\n    pass\n")
    result = run_cli("run", cwd=root, timeout=180)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors[0].startswith("testfleet: error: lane 1 exited with code 4 before collecting")
    assert "it ran python .venv/bin/python (" in errors[0]
    assert "the project's .venv): install what the suite needs there" in errors[0]
    assert 'python = "PATH" in [tool.testfleet] (or --python PATH)' in errors[0]
    assert "No module named 'django_is_not_installed_here'" in result.stderr
    assert "Traceback (most recent call last)" not in errors[0]


def test_a_sourced_env_file_changes_no_option_of_a_later_command(
    tmp_path: Path, own_run_base: Path
) -> None:
    """`set -a; . .testfleet/env; set +a` as the README says, then a command in that shell:
    the project's `lanes = 3` stands (the env file used to set TESTFLEET_LANES=1)."""
    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\nlanes = 3\n")
    for name in ("a", "b", "c"):
        (root / f"test_{name}.py").write_text(f"def test_{name}():\n    pass\n")
    up = start_cli(root, "up")
    try:
        wait_until_up(up)
        written = (root / ".testfleet" / "env").read_text().splitlines()
        shell = subprocess.run(
            [
                "sh",
                "-c",
                'set -a; . .testfleet/env; set +a; exec "$0" -m testfleet plan',
                sys.executable,
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
            check=False,
        )
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
    assert shell.returncode == 0, shell.stderr
    assert "on 3 lane(s)" in shell.stdout.splitlines()[0], shell.stdout
    assert "TESTFLEET_LANE_COUNT=1" in written  # the developer's lane is one lane
    assert list(own_run_base.iterdir()) == []
