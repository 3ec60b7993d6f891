"""An external Valkey that cannot give every lane a DB number, through the real CLI: exit 2
(a usage error, as the README's exit codes say) with one line naming the url and the fix."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testfleet.errors import ExitCode
from testfleet.kinds import KINDS
from testfleet.ports import free_port
from tests.helpers import run_cli, write_pyproject

pytestmark = pytest.mark.e2e


@pytest.fixture
def four_databases(tmp_path: Path) -> Iterator[str]:
    """A Valkey someone else runs, with `databases 4`: DB 0 to 3."""
    port = free_port()
    binary = KINDS["valkey"].binary().path
    server = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--databases", "4"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "valkey-server exited"
                assert time.monotonic() < deadline, "valkey-server did not listen"
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


def test_lanes_past_an_external_servers_db_numbers_exit_2(
    tmp_path: Path, own_run_base: Path, four_databases: str
):
    """Six lanes from DB 0 of a server with four DBs: one line, exit 2, no test run."""
    project = write_pyproject(
        tmp_path / "p",
        "[tool.testfleet.services.valkey]\n"
        'backend = "external"\n'
        f'url = "{four_databases}/0"\n'
        'isolation = "database"\n',
    )
    (project / "test_a.py").write_text("def test_a():\n    pass\n")
    result = run_cli("run", "-n", "6", cwd=project, timeout=120)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert result.stderr.splitlines() == [
        "testfleet: error: tool.testfleet.services.valkey.url: 6 lane(s) from DB 0 take DB"
        f" numbers up to 5, and the server at {four_databases[len('redis://') :]} has no DB 5"
        " (ERR DB index is out of range); use fewer lanes, a lower DB number in the url, or a"
        " server with more databases"
    ]
    assert list(own_run_base.iterdir()) == []
