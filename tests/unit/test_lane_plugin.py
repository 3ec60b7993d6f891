"""The lane plugin through pytester, against a scripted coordinator on a unix socket."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from testfleet.protocol import LineReader, Message, send

pytest_plugins = ["pytester"]


class FakeCoordinator:
    """Hands out the given units in order, records every message."""

    def __init__(self, path: Path, units: list[list[str]]) -> None:
        self.units = list(units)
        self.messages: list[Message] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        reader = LineReader()
        with conn:
            while data := conn.recv(65536):
                for message in reader.feed(data):
                    self.messages.append(message)
                    if message["type"] == "next":
                        if self.units:
                            send(conn, {"type": "unit", "nodeids": self.units.pop(0)})
                        else:
                            send(conn, {"type": "done"})
        self.server.close()

    def of(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m["type"] == kind]


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(
        test_one="""
        import pathlib
        import pytest

        EVENTS = pathlib.Path(__file__).with_name("events.txt")

        def event(what):
            with EVENTS.open("a") as file:
                file.write(what + "\\n")

        @pytest.fixture(scope="module")
        def resource():
            event("module setup")
            yield
            event("module teardown")

        def test_pass(resource): event("test_pass")
        def test_fail(resource):
            event("test_fail")
            print("about to fail")
            assert 1 == 2, "one is not two"
        @pytest.mark.skip(reason="not today")
        def test_skip(): pass
        @pytest.mark.xfail(reason="known")
        def test_xfail(): assert False
    """,
        test_two="""
        import pytest
        @pytest.fixture
        def broken(): raise RuntimeError("setup broke")
        def test_error(broken): pass
        def test_other(): pass
    """,
    )
    return pytester


def run_lane(
    pytester: pytest.Pytester,
    tmp_path: Path,
    units: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[pytest.RunResult, FakeCoordinator]:
    path = tmp_path / "q.sock"
    coordinator = FakeCoordinator(path, units)
    monkeypatch.setenv("TESTFLEET_QUEUE", str(path))
    monkeypatch.setenv("TESTFLEET_LANE", "3")
    result = pytester.runpytest_subprocess(
        "-p", "testfleet.worker.plugin", "-p", "no:cacheprovider"
    )
    coordinator.thread.join(10)
    return result, coordinator


def test_lane_runs_only_what_it_is_handed(suite, tmp_path, monkeypatch):
    result, coordinator = run_lane(suite, tmp_path, [["test_two.py::test_other"]], monkeypatch)
    assert coordinator.of("hello")[0]["lane"] == 3
    assert len(coordinator.of("collected")[0]["nodeids"]) == 6
    assert [m["nodeid"] for m in coordinator.of("result")] == ["test_two.py::test_other"]
    result.assert_outcomes(passed=1)


def test_results_carry_outcomes_and_messages(suite, tmp_path, monkeypatch):
    ids = [
        "test_one.py::test_pass",
        "test_one.py::test_fail",
        "test_one.py::test_skip",
        "test_one.py::test_xfail",
    ]
    _, coordinator = run_lane(suite, tmp_path, [ids, ["test_two.py::test_error"]], monkeypatch)
    results = {m["nodeid"].split("::")[1]: m for m in coordinator.of("result")}
    assert {k: v["outcome"] for k, v in results.items()} == {
        "test_pass": "passed",
        "test_fail": "failed",
        "test_skip": "skipped",
        "test_xfail": "xfailed",
        "test_error": "error",
    }
    assert "one is not two" in results["test_fail"]["message"]
    assert "about to fail" in results["test_fail"]["output"]
    assert results["test_skip"]["message"] == "not today"
    assert "setup broke" in results["test_error"]["message"]
    assert [m["nodeid"] for m in coordinator.of("start")] == [*ids, "test_two.py::test_error"]


def test_module_fixture_spans_units_of_one_module(suite, tmp_path, monkeypatch):
    """Units arrive one by one; a module fixture is torn down only when the module is done."""
    result, _ = run_lane(
        suite, tmp_path, [["test_one.py::test_pass"], ["test_one.py::test_fail"]], monkeypatch
    )
    result.assert_outcomes(passed=1, failed=1)
    assert (suite.path / "events.txt").read_text().splitlines() == [
        "module setup",
        "test_pass",
        "test_fail",
        "module teardown",
    ]
