"""What a project's own path, ports and settings files do to a run: a path that is shell
syntax stays a path, a fixed port is served, coverage reads the settings it measured with."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.e2e.test_lanes import make_suite
from tests.helpers import run_cli, write_pyproject

pytestmark = pytest.mark.e2e


def test_project_path_that_is_shell_syntax_runs_nothing(tmp_path: Path):
    """Placeholders in shell-string commands are quoted: a project in `a b;touch${IFS}x;`
    starts its command service and runs no `touch`."""
    root = tmp_path / "a b;touch${IFS}pwned;"
    project = write_pyproject(
        root,
        "[tool.testfleet.services.api]\n"
        "kind = 'command'\n"
        'command = "python -m http.server {port} --bind 127.0.0.1 --directory {project_dir}"\n'
        'ready = { command = "test -d {project_dir}" }\n',
    )
    (project / "test_api.py").write_text(
        "import os, urllib.request\n"
        "def test_serves_the_project():\n"
        "    body = urllib.request.urlopen(os.environ['API_URL'] + '/pyproject.toml').read()\n"
        "    assert b'tool.testfleet' in body\n"
    )
    with (project / "pyproject.toml").open("a") as config:
        config.write('export = { API_URL = "{url}" }\n')
    result = run_cli("run", cwd=project)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.rglob("pwned"))
    assert not (project / "pwned").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_fixed_port_is_served_and_a_taken_one_is_named(tmp_path: Path):
    port = _free_port()
    project = write_pyproject(tmp_path, f"[tool.testfleet.services.valkey]\nport = {port}\n")
    (project / "test_port.py").write_text(
        "import os, socket\n"
        "def test_default_address():\n"
        f"    assert os.environ['VALKEY_URL'].endswith(':{port}/0')\n"
        f"    socket.create_connection(('127.0.0.1', {port})).close()\n"
    )
    result = run_cli("run", cwd=project)
    assert result.returncode == 0, result.stderr
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        busy = run_cli("run", cwd=project)
    assert busy.returncode == 3
    assert f"port {port} is already in use by another process" in busy.stderr


def test_coverage_reads_the_settings_the_lanes_measured_with(tmp_path: Path):
    """A setup.cfg with only flake8 settings does not hide `[tool.coverage]`: its source and
    fail_under apply."""
    project = make_suite(
        tmp_path,
        {
            "app.py": "def used():\n    return 1\n\ndef unused():\n    return 2\n",
            "tests/test_app.py": "import app\ndef test_used(): assert app.used() == 1\n",
            "setup.cfg": "[flake8]\nmax-line-length = 100\n",
        },
        "coverage = true\n"
        "[tool.coverage.run]\nsource = ['app']\n"
        "[tool.coverage.report]\nfail_under = 77\n",
    )
    result = run_cli("run", "-n", "2", cwd=project)
    assert result.returncode == 1, result.stderr
    assert "total coverage 75.00% is under coverage-fail-under 77%" in result.stderr
