"""The JUnit XML report: pytest's names, odd characters, one suite per lane, linear cost."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import junitparser

from testfleet.reports.junit import write_junit
from testfleet.results import TestResult


def cases_by_name(path: Path) -> dict[str, junitparser.TestCase]:
    return {case.name: case for suite in junitparser.JUnitXml.fromfile(str(path)) for case in suite}


def test_control_characters_are_spelled_out(tmp_path: Path):
    """Characters XML cannot hold (\\x01, ANSI escapes) in any field become `#xHH` text, as in
    pytest's own report, instead of making the whole report unwritable."""
    junit = tmp_path / "junit.xml"
    results = [
        TestResult(
            "tests/test_c.py::test_fail[\x02]",
            "failed",
            lane=1,
            message="assert '\x01' == 'a'",
            text="E   \x1b[31mred\x1b[0m \x00 \ufffe \udce2",
            output="\x1b[1mbold\x1b[0m\n",
        ),
        TestResult("tests/test_c.py::test_skip", "skipped", lane=1, message="no \x07bell"),
        TestResult("tests/te\x7fst_c.py::TestK\x03::test_ok", "passed", lane=1),
    ]
    write_junit(junit, results, versions={"": "3.11.9"})
    cases = cases_by_name(junit)
    failed = cases["test_fail[#x02]"]
    assert failed.result[0].message == "assert '#x01' == 'a'"
    assert failed.result[0].text == "E   #x1B[31mred#x1B[0m #x00 #xFFFE #xDCE2"
    assert failed.system_out == "#x1B[1mbold#x1B[0m\n"
    assert cases["test_skip"].result[0].message == "no #x07bell"
    ok = cases["test_ok"]
    assert ok.classname == "tests.te#x7Fst_c.TestK#x03"
    assert ok._elem.get("file") == "tests/te#x7Fst_c.py"


def test_double_colons_inside_parameter_ids_stay_in_the_name(tmp_path: Path):
    """A node id is split into file, class and name only at `::` outside the `[...]` of a
    parametrize id, as pytest's own JUnit report does."""
    junit = tmp_path / "junit.xml"
    results = [
        TestResult("tests/test_p.py::test_p[1::int]", "passed", lane=0),
        TestResult("tests/test_p.py::TestK::test_p[a::b]", "passed", lane=0),
    ]
    write_junit(junit, results, versions={"": "3.11.9"})
    cases = cases_by_name(junit)
    assert cases["test_p[1::int]"].classname == "tests.test_p"
    assert cases["test_p[a::b]"].classname == "tests.test_p.TestK"
    assert {case._elem.get("file") for case in cases.values()} == {"tests/test_p.py"}


def test_suites_per_lane_with_statistics_and_details(tmp_path: Path):
    """One suite per lane (and one for tests that never ran) with lane, Python and shard as
    properties, correct counts, and each outcome's message, text and output."""
    junit = tmp_path / "reports" / "junit.xml"
    results = [
        TestResult("tests/a.py::test_ok", "passed", 0.5, lane=1),
        TestResult("tests/a.py::test_fail", "failed", 0.25, lane=1, message="boom", text="tb"),
        TestResult("tests/b.py::T::test_err", "error", 1.0, lane=0, message="crashed"),
        TestResult("tests/b.py::test_xf", "xfailed", lane=0, output="printed"),
        TestResult("tests/c.py::test_left", "not run", lane=None, timed=False),
        TestResult("tests/d.py", "error", lane=0, message="collection error", text="E"),
    ]
    results = [dataclasses.replace(r, python="3.12", shard="2/3") for r in results]
    write_junit(junit, results, versions={"3.12": "3.12.1"})
    xml = junitparser.JUnitXml.fromfile(str(junit))
    suites = {suite.name: suite for suite in xml}
    assert list(suites) == [
        "pytest (lane 0, python 3.12.1, shard 2/3)",
        "pytest (lane 1, python 3.12.1, shard 2/3)",
        "pytest (not run, python 3.12.1, shard 2/3)",
    ]
    lane1 = suites["pytest (lane 1, python 3.12.1, shard 2/3)"]
    assert {p.name: p.value for p in lane1.properties()} == {
        "lane": "1",
        "python": "3.12.1",
        "shard": "2/3",
    }
    assert (lane1.tests, lane1.failures, lane1.errors, lane1.skipped, lane1.time) == (
        2,
        1,
        0,
        0,
        0.75,
    )
    assert (xml.tests, xml.failures, xml.errors, xml.skipped, xml.time) == (6, 1, 2, 2, 1.75)
    cases = cases_by_name(junit)
    assert cases["test_ok"].is_passed
    assert cases["test_ok"].time == 0.5
    failure = cases["test_fail"].result[0]
    assert isinstance(failure, junitparser.Failure)
    assert (failure.message, failure.type, failure.text) == ("boom", "failure", "tb")
    error = cases["test_err"].result[0]
    assert isinstance(error, junitparser.Error)
    assert (error.message, cases["test_err"].classname) == ("crashed", "tests.b.T")
    xfail = cases["test_xf"].result[0]
    assert isinstance(xfail, junitparser.Skipped)
    assert (xfail.message, xfail.type) == ("xfailed", "pytest.xfail")
    assert cases["test_xf"].system_out == "printed"
    assert cases["test_left"].result[0].message == "not run"
    module = cases["tests/d.py"]
    assert (module.classname, module._elem.get("file")) == ("tests.d", "tests/d.py")
    assert [p.name for p in junit.parent.iterdir()] == ["junit.xml"]  # no temp file left


def count_calls(action: Callable[[], None]) -> int:
    """Python and C function calls made by `action`: deterministic, unlike wall-clock time."""
    calls = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls


def test_writing_is_linear_in_the_number_of_tests(tmp_path: Path):
    """Four times the tests in one lane cost about four times the work, not sixteen: the
    suite's statistics are counted once, not again for every added case."""

    def work(n: int) -> int:
        results = [
            TestResult(f"tests/t.py::test_{i}", "failed" if i % 3 else "passed", lane=0)
            for i in range(n)
        ]
        return count_calls(
            lambda: write_junit(tmp_path / f"{n}.xml", results, versions={"": "3.11"})
        )

    small, large = work(300), work(1200)
    assert large < 6 * small, (small, large)
