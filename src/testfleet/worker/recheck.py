"""Loaded (`-p testfleet.worker.recheck`) into the pytest of a recheck lane: appends what
happens to TESTFLEET_RECHECK_FILE, one JSON object a line, as it happens: a test's start and
finish (the recheck stops a test that runs past the test timeout, as the lanes' coordinator
does), its outcome, and the modules that did not import. Written as it goes, the file still
tells what finished when the recheck is killed under a later test.

    {"event": "start" | "finish", "nodeid": ...}
    {"event": "outcome", "nodeid": ..., "outcome": "passed" | "failed" | "skipped" | ...}
    {"event": "collection_error", "nodeid": ..., "error": "NameError: ..."}
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

_outcomes: dict[str, str] = {}


def _write(**event: Any) -> None:
    path = os.environ.get("TESTFLEET_RECHECK_FILE")
    if path:
        # Opened for each line: every line is on disk before the test it announces runs.
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(event) + "\n")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        lines = str(report.longrepr).strip().splitlines()
        # pytest's "E   NameError: ..." line, without its margin.
        error = re.sub(r"^E\s+", "", lines[-1].strip()) if lines else "failed"
        _write(event="collection_error", nodeid=report.nodeid, error=error)


def pytest_runtest_logstart(nodeid: str) -> None:
    _write(event="start", nodeid=nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    nodeid = report.nodeid
    if report.when == "setup":
        _outcomes[nodeid] = report.outcome  # a new attempt (rerun plugins) starts here
    elif report.failed:
        _outcomes[nodeid] = "failed"
    elif report.when == "call" and _outcomes.get(nodeid) != "failed":
        _outcomes[nodeid] = report.outcome
    _write(event="outcome", nodeid=nodeid, outcome=_outcomes[nodeid])


def pytest_runtest_logfinish(nodeid: str) -> None:
    _write(event="finish", nodeid=nodeid)
