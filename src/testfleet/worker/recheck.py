"""Loaded (`-p testfleet.worker.recheck`) into the pytest of a recheck lane: writes each
test's outcome to TESTFLEET_RECHECK_FILE, so the recheck knows how the test it is about did,
whatever the tests before it did."""

from __future__ import annotations

import json
import os
import re

import pytest

_outcomes: dict[str, str] = {}
_collection: dict[str, str] = {}


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        lines = str(report.longrepr).strip().splitlines()
        # pytest's "E   NameError: ..." line, without its margin.
        _collection[report.nodeid] = re.sub(r"^E\s+", "", lines[-1].strip()) if lines else "failed"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "setup":
        _outcomes[report.nodeid] = report.outcome  # a new attempt (rerun plugins) starts here
    elif report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.when == "call" and _outcomes.get(report.nodeid) != "failed":
        _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("TESTFLEET_RECHECK_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump({"outcomes": _outcomes, "collection_errors": _collection}, out)
