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
import time
from collections import deque
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from testfleet.protocol import LineReader, Message, receive, send
from testfleet.worker import shared

# A test's text or output travels whole (the results file keeps it; the JUnit XML and the
# terminal show its start and end) up to this many characters.
MAX_OUTPUT = 2_000_000
# How long a lane told to wait for work waits before it asks again.
WAIT_SECONDS = 0.02
# The lane's coverage measurement, started before conftest files load.
_measurement: dict[str, Any] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    data_file = os.environ.get("TESTFLEET_COVERAGE_FILE")
    if not data_file or "coverage" in _measurement:
        return
    import coverage

    # The project's settings file, the one the combined report reads, or an empty one of the
    # run's when the project has none: coverage.py measures subprocesses only given a file.
    rcfile: str | bool = os.environ.get("TESTFLEET_COVERAGE_RCFILE") or True
    cov = coverage.Coverage(data_file=data_file, data_suffix=True, config_file=rcfile)
    measure_what_it_starts(cov)
    leave_out_testfleet(cov, early_config.invocation_params.dir)
    cov.start()
    _measurement["coverage"] = cov


def measure_what_it_starts(cov: Any) -> None:
    """Python processes the tests start are measured too (coverage >= 7.10: its .pth file reads
    the variable `patch = subprocess` sets), and save their data when stopped with SIGTERM, as
    tests stop servers; the project's own patches stay. Older versions lack these options."""
    with contextlib.suppress(Exception):
        patches = list(cov.get_option("run:patch") or [])
        cov.set_option("run:patch", sorted({*patches, "subprocess"}))
    with contextlib.suppress(Exception):
        cov.set_option("run:sigterm", True)


def leave_out_testfleet(cov: Any, project: Path) -> None:
    """This plugin runs in the lane from testfleet's own directory, which coverage.py would
    measure as the project's code unless it is in the lane's site-packages (testfleet is
    often installed elsewhere, or nowhere the lane sees): it is left out, unless the project
    is testfleet itself."""
    own = Path(__file__).resolve().parent.parent
    if project.resolve() == own or project.resolve() in own.parents:
        return
    omitted = list(cov.get_option("run:omit") or [])
    cov.set_option("run:omit", [*omitted, f"{own}{os.sep}*"])


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
        _collect_errors[report.nodeid] = bounded(str(report.longrepr))


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


def bounded(text: str) -> str:
    """A test's text or output whole, as the run's results file keeps it; only past
    MAX_OUTPUT (a test that printed megabytes) its start and end, the cut marked."""
    if len(text) <= MAX_OUTPUT:
        return text
    head, tail = text[: MAX_OUTPUT // 4], text[len(text) - MAX_OUTPUT * 3 // 4 :]
    cut = len(text) - len(head) - len(tail)
    return f"{head}\n[... {cut} characters cut in the lane]\n{tail}"


class LaneWorker:
    def __init__(self, config: pytest.Config, address: str) -> None:
        self.config = config
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address)
        self.reader = LineReader()
        self.pending: list[Message] = []
        self.phases: dict[str, list[pytest.TestReport]] = {}
        # Where each failing test first failed (file, line), for CI annotations.
        self.where: dict[str, tuple[str, int | None]] = {}
        folder = shared.wanted(config)
        self.shared = shared.SharedCollection(folder) if folder is not None else None
        # Modules that skipped themselves at import (pytest.importorskip, skip(allow_module_
        # level=True)): each is reported as one skipped test, its node id the module's.
        self.skips: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}  # collection errors, ours and other lanes'
        self.by_id: dict[str, pytest.Item] = {}
        self.collecting: dict[str, float] = {}
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

    @pytest.hookimpl(tryfirst=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> pytest.CollectReport | None:
        """A test file another lane claimed stays uncollected (not imported) here, as
        pytest's --lf leaves files out."""
        if (
            self.shared is None
            or not isinstance(collector, pytest.File)
            or isinstance(collector.parent, pytest.File)
            or self.shared.take(collector)
        ):
            return None
        return pytest.CollectReport(collector.nodeid, "passed", None, [])

    def pytest_collectstart(self, collector: pytest.Collector) -> None:
        if isinstance(collector, pytest.File):
            self.collecting[collector.nodeid] = time.perf_counter()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.nodeid == "" and self.shared is not None:
            self.shared.resolving = False  # the session's own report: its arguments resolved
        started = self.collecting.pop(report.nodeid, None)
        if (
            started is not None
            and self.shared is not None
            and report.nodeid in self.shared.imported
        ):
            # How long a file of ours took (its import, mostly): the coordinator weighs
            # importing it again in another lane against handing that lane other work.
            self.shared.seconds.setdefault(report.nodeid, time.perf_counter() - started)
        if report.failed:
            text = bounded(str(report.longrepr))
            self.errors[report.nodeid] = text
            send(self.sock, {"type": "collect_error", "nodeid": report.nodeid, "text": text})
        elif report.skipped and isinstance(report.longrepr, tuple):
            path, line, reason = report.longrepr
            reason = str(reason).removeprefix("Skipped: ")
            self.skips[report.nodeid] = {
                "message": reason,
                "text": f"{path}:{line + 1 if isinstance(line, int) else line}: {reason}",
            }

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        own = shared.by_file(session.items, self.skips, self.shared.imported if self.shared else ())
        if self.shared is None:
            nodeids = [*own.pop("", []), *(n for ids in own.values() for n in ids)]
            files: list[str] = sorted(own)
        else:
            self.shared.publish(own, self.skips, self.errors)
            parts = self.shared.gather(lambda nodeid: self._collect_here(session, nodeid))
            own = shared.by_file(session.items, self.skips, self.shared.imported)
            nodeids = shared.merged(self.shared.order, own, parts)
            for part in parts.values():
                self.skips.update(part["skips"])
                for nodeid, text in part["errors"].items():
                    if nodeid not in self.errors:
                        # Every lane stops on a collection error, as pytest does; the
                        # coordinator keeps each error once.
                        self.errors[nodeid] = text
                        send(self.sock, {"type": "collect_error", "nodeid": nodeid, "text": text})
            files = sorted(self.shared.imported)
        self.by_id = {item.nodeid: item for item in session.items}
        message: Message = {"type": "collected", "nodeids": nodeids, "files": files}
        if self.shared is not None:
            message["import_seconds"] = self.shared.seconds
        send(self.sock, message)

    def _collect_here(self, session: pytest.Session, nodeid: str) -> None:
        assert self.shared is not None
        for item in self.shared.collect(session, nodeid):
            self.by_id[item.nodeid] = item

    def _resolve(self, session: pytest.Session, nodeid: str) -> pytest.Item | Message:
        """The test to run for a node id handed to us: collected already, or its file now;
        a module that skipped itself is its skip result."""
        skip = self.skips.get(nodeid)
        if skip is not None:
            return {"nodeid": nodeid, "outcome": "skipped", "duration": 0.0, "output": "", **skip}
        if nodeid not in self.by_id and self.shared is not None:
            self._collect_here(session, shared.file_key(nodeid))
        item = self.by_id.get(nodeid)
        if item is not None:
            return item
        lane = os.environ.get("TESTFLEET_LANE", "?")
        why = f"lane {lane} did not collect this test where another lane did"
        return {
            "nodeid": nodeid,
            "outcome": "error",
            "duration": 0.0,
            "message": why,
            "text": why + ": collection must not depend on the lane or on randomness",
            "output": "",
        }

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if (session.testsfailed or self.errors) and not (
            session.config.option.continue_on_collection_errors
        ):
            count = session.testsfailed or len(self.errors)
            raise session.Interrupted(f"{count} error(s) during collection")
        queue: deque[pytest.Item | Message] = deque()

        def fetch() -> bool:
            send(self.sock, {"type": "next"})
            message = receive(self.sock, self.reader, self.pending)
            while message is not None and message["type"] == "wait":
                # Another lane runs what is left sooner than we would import it: ask again
                # shortly (the coordinator hands it here once that changes).
                time.sleep(WAIT_SECONDS)
                send(self.sock, {"type": "next"})
                message = receive(self.sock, self.reader, self.pending)
            if message is None or message["type"] != "unit":
                return False
            queue.extend(self._resolve(session, n) for n in message["nodeids"])
            return True

        more = fetch()
        while queue:
            entry = queue.popleft()
            # Knowing the next test decides which fixtures tear down now (none: the session's
            # too): ask for more work before running the last test we hold.
            while more and not any(isinstance(e, pytest.Item) for e in queue):
                more = fetch()
            if not isinstance(entry, pytest.Item):
                send(self.sock, {"type": "start", "nodeid": entry["nodeid"]})
                send(self.sock, {"type": "result", **entry})
                continue
            send(self.sock, {"type": "start", "nodeid": entry.nodeid})
            nextitem = next((e for e in queue if isinstance(e, pytest.Item)), None)
            entry.config.hook.pytest_runtest_protocol(item=entry, nextitem=nextitem)
            if session.shouldfail or session.shouldstop:
                send(
                    self.sock,
                    {"type": "stopping", "reason": str(session.shouldfail or session.shouldstop)},
                )
                break
        return True

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed and item.nodeid not in self.where:
            self.where[item.nodeid] = failure_location(item, call.excinfo)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.phases.setdefault(report.nodeid, []).append(report)
        if report.when == "teardown":
            where = self.where.pop(report.nodeid, None)
            send(
                self.sock,
                {"type": "result", **summarize(self.phases.pop(report.nodeid), where)},
            )

    def pytest_sessionfinish(self) -> None:
        self.sock.close()


def failure_location(
    item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException] | None
) -> tuple[str, int | None]:
    """The test's file (relative to where the lane runs: the project's directory) and the line
    that failed in it: the deepest frame of the traceback in that file, else the test's own
    line (a fixture that broke in a conftest.py)."""
    path = Path(item.path)
    line = None
    for entry in reversed(excinfo.traceback if excinfo is not None else []):
        if Path(entry.path) == path:
            line = entry.lineno + 1
            break
    if line is None and item.location[1] is not None:
        line = item.location[1] + 1
    return os.path.relpath(path, item.config.invocation_params.dir), line


def summarize(
    reports: list[pytest.TestReport], where: tuple[str, int | None] | None = None
) -> dict[str, Any]:
    """One outcome for a test from its setup/call/teardown reports, as JUnit sees it; a failing
    one with `where` it failed."""
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
        )
    summary: dict[str, Any] = {
        "nodeid": reports[0].nodeid,
        "outcome": outcome,
        "duration": sum(r.duration for r in reports),
        "message": message.splitlines()[0] if message else "",
        "text": bounded(text),
        "output": bounded(output),
    }
    if outcome in ("failed", "error") and where is not None:
        summary["file"], summary["line"] = where
    return summary
