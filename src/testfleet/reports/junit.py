"""One JUnit XML for the whole run, built from the results lanes streamed: every collected
test appears exactly once, also when its lane crashed or the run was interrupted."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from junitparser import Attr, Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from testfleet.results import TestResult


class FileTestCase(TestCase):
    """pytest's JUnit report names each test's file; CI viewers link to it."""

    file = Attr()


def _names(nodeid: str) -> tuple[str, str, str]:
    """(file, classname, name) the way pytest's own JUnit report spells them."""
    path, _, rest = nodeid.partition("::")
    parts = rest.split("::") if rest else [path]
    module = path.removesuffix(".py").replace("/", ".")
    classname = ".".join([module, *parts[:-1]])
    return path, classname, parts[-1]


def _case(result: TestResult) -> TestCase:
    path, classname, name = _names(result.nodeid)
    case = FileTestCase(name, classname, round(result.duration, 3))
    case.file = path
    if result.outcome == "failed":
        case.result = [Failure(result.message, "failure")]
    elif result.outcome == "error":
        case.result = [Error(result.message, "error")]
    elif result.outcome in ("skipped", "xfailed", "not run"):
        reason = result.message or result.outcome
        case.result = [
            Skipped(reason, "pytest.xfail" if result.outcome == "xfailed" else "pytest.skip")
        ]
    if result.text:
        for outcome in case.result:
            outcome.text = result.text
    if result.output:
        case.system_out = result.output
    return case


def write_junit(
    path: Path, results: Sequence[TestResult], *, python: str, shard: str | None = None
) -> None:
    """Suites per lane (their names unique), with lane and Python version as properties."""
    xml = JUnitXml("testfleet")
    by_lane: dict[int | None, list[TestResult]] = {}
    for result in results:
        by_lane.setdefault(result.lane, []).append(result)
    for lane in sorted(by_lane, key=lambda n: (n is None, n or 0)):
        label = f"lane {lane}" if lane is not None else "not run"
        suite = TestSuite(f"pytest ({label}, python {python}{', shard ' + shard if shard else ''})")
        suite.add_property("lane", str(lane) if lane is not None else "none")
        suite.add_property("python", python)
        if shard:
            suite.add_property("shard", shard)
        for result in by_lane[lane]:
            suite.add_testcase(_case(result))
        suite.update_statistics()  # type: ignore[no-untyped-call]
        xml.add_testsuite(suite)
    xml.update_statistics()  # type: ignore[no-untyped-call]
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    xml.write(str(staging), pretty=True)
    os.replace(staging, path)
