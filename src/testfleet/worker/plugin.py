"""The lane plugin (`pytest -p testfleet.worker.plugin`): runs inside each lane's pytest process.

It reports the collection to the coordinator, then runs units as the coordinator hands them
out, streaming each test's result as soon as its teardown ends, so nothing already finished
is lost when a lane is killed. With TESTFLEET_COVERAGE_FILE set, it measures coverage (and
that of subprocesses) from before conftest files load.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections import deque
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from testfleet.protocol import LineReader, Message, receive, send

MAX_OUTPUT = 20_000
# The lane's coverage measurement, started before conftest files load.
_measurement: dict[str, Any] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    data_file = os.environ.get("TESTFLEET_COVERAGE_FILE")
    if not data_file or "coverage" in _measurement:
        return
    import coverage

    # The same settings file the combined report reads (testfleet's coverage.config_file).
    rcfile: str | bool = os.environ.get("TESTFLEET_COVERAGE_RCFILE") or True
    cov = coverage.Coverage(data_file=data_file, data_suffix=True, config_file=rcfile)
    # Measure what the tests start too (coverage >= 7.10); older versions lack the option.
    with contextlib.suppress(Exception):
        cov.set_option("run:patch", ["subprocess"])
    cov.start()
    _measurement["coverage"] = cov


def pytest_unconfigure(config: pytest.Config) -> None:
    cov = _measurement.pop("coverage", None)
    if cov is not None:
        cov.stop()
        cov.save()


_notices: list[str] = []
_collect_errors: dict[str, str] = {}


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    # pytest-xdist's -n from the project's addopts would start workers inside every lane;
    # lanes replace it. Switched off before xdist's own cmdline_main reads it (which would
    # also refuse --pdb with it).
    workers = getattr(config.option, "numprocesses", None)
    if workers:
        config.option.numprocesses = 0
        config.option.dist = "no"
        config.option.tx = []
        _notices.append(
            f"-n {workers} (pytest-xdist) from pytest's addopts is ignored inside lanes;"
            " testfleet's -n/lanes replaces it"
        )
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    from testfleet import pytest_plugin

    manager = config.pluginmanager
    if not manager.has_plugin("testfleet") and not manager.is_registered(pytest_plugin):
        # testfleet is not installed where the tests run (its lane plugin came by PYTHONPATH):
        # its fixtures still must be there.
        manager.register(pytest_plugin, "testfleet")
    address = os.environ.get("TESTFLEET_QUEUE")
    if address and not config.option.collectonly:
        config.pluginmanager.register(LaneWorker(config, address), "testfleet-lane-worker")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed and os.environ.get("TESTFLEET_COLLECT_FILE"):
        _collect_errors[report.nodeid] = str(report.longrepr)[-MAX_OUTPUT:]


def pytest_collection_finish(session: pytest.Session) -> None:
    """`testfleet plan` collects through this file rather than parsing pytest's terminal
    output, which `-q`, `-vv` and plugins all change."""
    target = os.environ.get("TESTFLEET_COLLECT_FILE")
    if target:
        Path(target).write_text(
            json.dumps(
                {
                    "nodeids": [item.nodeid for item in session.items],
                    "errors": _collect_errors,
                    "notices": _notices,
                }
            ),
            encoding="utf-8",
        )


class LaneWorker:
    def __init__(self, config: pytest.Config, address: str) -> None:
        self.config = config
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address)
        self.reader = LineReader()
        self.pending: list[Message] = []
        self.phases: dict[str, list[pytest.TestReport]] = {}
        send(
            self.sock,
            {
                "type": "hello",
                "lane": int(os.environ.get("TESTFLEET_LANE", "0")),
                "pid": os.getpid(),
            },
        )
        for notice in _notices:
            send(self.sock, {"type": "notice", "text": notice})

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            send(
                self.sock,
                {
                    "type": "collect_error",
                    "nodeid": report.nodeid,
                    "text": str(report.longrepr)[-MAX_OUTPUT:],
                },
            )

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        send(self.sock, {"type": "collected", "nodeids": [i.nodeid for i in session.items]})

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            raise session.Interrupted(f"{session.testsfailed} error(s) during collection")
        by_id = {item.nodeid: item for item in session.items}
        queue: deque[pytest.Item] = deque()

        def fetch() -> bool:
            send(self.sock, {"type": "next"})
            message = receive(self.sock, self.reader, self.pending)
            if message is None or message["type"] != "unit":
                return False
            queue.extend(by_id[n] for n in message["nodeids"])
            return True

        more = fetch()
        while queue:
            item = queue.popleft()
            # Knowing the next test decides which fixtures tear down now: ask for more work
            # before running the last test we hold.
            if not queue and more:
                more = fetch()
            send(self.sock, {"type": "start", "nodeid": item.nodeid})
            item.config.hook.pytest_runtest_protocol(
                item=item, nextitem=queue[0] if queue else None
            )
            if session.shouldfail or session.shouldstop:
                send(
                    self.sock,
                    {"type": "stopping", "reason": str(session.shouldfail or session.shouldstop)},
                )
                break
        return True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.phases.setdefault(report.nodeid, []).append(report)
        if report.when == "teardown":
            send(self.sock, {"type": "result", **summarize(self.phases.pop(report.nodeid))})

    def pytest_sessionfinish(self) -> None:
        self.sock.close()


def summarize(reports: list[pytest.TestReport]) -> dict[str, Any]:
    """One outcome for a test from its setup/call/teardown reports, as JUnit sees it."""
    by_phase = {r.when: r for r in reports}
    setup, call, teardown = by_phase.get("setup"), by_phase.get("call"), by_phase.get("teardown")
    outcome, culprit = "passed", None
    if setup is not None and setup.failed:
        outcome, culprit = "error", setup
    elif setup is not None and setup.skipped:
        outcome, culprit = "skipped", setup
    elif call is not None:
        if hasattr(call, "wasxfail"):
            outcome, culprit = ("xfailed" if call.skipped else "xpassed"), call
        elif call.failed:
            outcome, culprit = "failed", call
        elif call.skipped:
            outcome, culprit = "skipped", call
    if teardown is not None and teardown.failed and outcome not in ("failed", "error"):
        outcome, culprit = "error", teardown
    message, text = "", ""
    if culprit is not None:
        text = culprit.longreprtext
        if outcome in ("skipped", "xfailed") and isinstance(culprit.longrepr, tuple):
            message = str(culprit.longrepr[2]).removeprefix("Skipped: ")
        elif hasattr(culprit, "wasxfail"):
            message = str(culprit.wasxfail)
        else:
            crash = getattr(culprit.longrepr, "reprcrash", None)
            if crash is not None:
                message = crash.message
            elif text.strip():
                message = text.strip().splitlines()[-1]
    output = ""
    if outcome in ("failed", "error"):
        output = "".join(
            f"--- {name} ---\n{content}\n" for r in reports for name, content in r.sections
        )[-MAX_OUTPUT:]
    return {
        "nodeid": reports[0].nodeid,
        "outcome": outcome,
        "duration": sum(r.duration for r in reports),
        "message": message.splitlines()[0] if message else "",
        "text": text[-MAX_OUTPUT:],
        "output": output,
    }
