"""`command` services in a run that measures coverage: a Python server measures itself and
saves its data into the run's coverage directory when testfleet stops it, whether it runs
through the shell or from an argv list."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest
from coverage import CoverageData

from testfleet.lanes import measure
from tests.integration.conftest import StackFactory

pytestmark = pytest.mark.integration

APP = """\
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        answered = True  # only a request runs this line
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""
ANSWERED = 5


def measured_lines(folder: Path, path: Path) -> set[int]:
    lines: set[int] = set()
    for piece in folder.glob(".coverage.*"):
        data = CoverageData(basename=str(piece))
        data.read()
        lines |= set(data.lines(str(path)) or ())
    return lines


@pytest.mark.parametrize(
    "command",
    [f"{sys.executable} app.py {{port}}", [sys.executable, "app.py", "{port}"]],
    ids=["shell", "argv"],
)
def test_a_command_service_saves_its_coverage_when_stopped(
    make_stack: StackFactory, tmp_path: Path, command: object
):
    """The line only a request runs is in the data the server saved on SIGTERM."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    stack = make_stack(
        {"services": {"api": {"kind": "command", "command": command, "export": {"U": "{url}"}}}}
    )
    measurement = measure.prepare(stack.run.run_dir.path, tmp_path, "")
    lane = stack.provision(1)
    with urllib.request.urlopen(lane.env["U"], timeout=5) as response:
        assert response.status == 200
    assert measured_lines(measurement.data_dir, app) == set()  # saved only when it stops
    stack.release(1)
    assert ANSWERED in measured_lines(measurement.data_dir, app)


def test_a_run_that_does_not_measure_gives_servers_nothing(make_stack: StackFactory):
    """Without a prepared coverage directory a server gets no coverage variable."""
    stack = make_stack({"services": {}})
    assert measure.process_environ(stack.run.run_dir.path) == {}
