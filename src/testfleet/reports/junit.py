"""One JUnit XML for the whole run, built from the results lanes streamed: every collected
test appears exactly once, also when its lane crashed or the run was interrupted.

Built with xml.etree directly: junitparser recounts a suite's statistics on every added
case, which made writing quadratic (4000 tests in one lane took 20 s)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from testfleet.files import write_atomic
from testfleet.reports.results_file import RESULTS_FILE, shown
from testfleet.results import TestResult

# What XML 1.0 cannot hold, plus DEL, exactly as pytest's junitxml (`bin_xml_escape`) has it:
# a test's output with an ANSI colour or a stray \x01 must not make the whole report unwritable.
_NOT_XML = re.compile("[^\t\n\r\x20-\x7e\x80-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_RESULT_ELEMENT: dict[str, tuple[str, str]] = {
    "failed": ("failure", "failure"),
    "error": ("error", "error"),
    "skipped": ("skipped", "pytest.skip"),
    "xfailed": ("skipped", "pytest.xfail"),
    "not run": ("skipped", "pytest.skip"),
}


def _spelled(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"#x{code:02X}" if code <= 0xFF else f"#x{code:04X}"


def xml_text(text: str) -> str:
    """`text` with each character XML cannot hold spelled as `#xHH`, the way pytest does."""
    return _NOT_XML.sub(_spelled, text)


def _names(nodeid: str) -> tuple[str, str, str]:
    """(file, classname, name) the way pytest's own JUnit report spells them."""
    path, _, rest = nodeid.partition("::")
    if not rest:
        return path, path.removesuffix(".py").replace("/", "."), path
    # A parametrize id may hold "::" itself (`test_p[1::int]`): only the part before the
    # first bracket names classes.
    head, bracket, params = rest.partition("[")
    parts = head.split("::")
    parts[-1] += bracket + params
    module = path.removesuffix(".py").replace("/", ".")
    return path, ".".join([module, *parts[:-1]]), parts[-1]


def _seconds(duration: float) -> float:
    return round(float(duration), 3)


def _case(result: TestResult, whole_in: str) -> ET.Element:
    path, classname, name = _names(result.nodeid)
    case = ET.Element(
        "testcase",
        {
            "name": xml_text(name),
            "classname": xml_text(classname),
            "time": str(_seconds(result.duration)),
            "file": xml_text(path),
        },
    )
    # Verdicts as test case properties, which CI viewers (and junitparser) show per test.
    marks = {"testfleet.verdict": result.verdict} if result.verdict else {}
    if result.flaky:
        marks["testfleet.flaky"] = "true"
    if marks:
        listed = ET.SubElement(case, "properties")
        for key, value in marks.items():
            ET.SubElement(listed, "property", {"name": key, "value": xml_text(value)})
    element = _RESULT_ELEMENT.get(result.outcome)
    if element is not None:
        tag, kind = element
        message = result.message or (result.outcome if tag == "skipped" else "")
        outcome = ET.SubElement(case, tag, {"message": xml_text(message)} if message else {})
        outcome.set("type", kind)
        if result.text:
            outcome.text = xml_text(shown(result.text, whole_in=whole_in))
    if result.output:
        ET.SubElement(case, "system-out").text = xml_text(shown(result.output, whole_in=whole_in))
    return case


def _count(results: Sequence[TestResult]) -> dict[str, str]:
    """A suite's statistics, counted once from the results rather than from the XML."""
    tags = [_RESULT_ELEMENT.get(r.outcome, ("", ""))[0] for r in results]
    return {
        "tests": str(len(results)),
        "errors": str(tags.count("error")),
        "failures": str(tags.count("failure")),
        "skipped": str(tags.count("skipped")),
        "time": str(round(sum(_seconds(r.duration) for r in results), 3)),
    }


def _suite(
    name: str, properties: dict[str, str], results: Sequence[TestResult], whole_in: str
) -> ET.Element:
    suite = ET.Element("testsuite", {"name": xml_text(name), **_count(results)})
    listed = ET.SubElement(suite, "properties")
    for key, value in properties.items():
        ET.SubElement(listed, "property", {"name": key, "value": xml_text(value)})
    suite.extend(_case(result, whole_in) for result in results)
    return suite


def write_junit(
    path: Path,
    results: Sequence[TestResult],
    *,
    versions: Mapping[str, str],
    whole_in: str = RESULTS_FILE,
) -> None:
    """A suite per (Python, shard, lane), names unique, with those as properties.
    `versions` maps each result's matrix label ("" without a matrix) to the full version;
    a failure's long text or output is cut, the cut naming `whole_in`, the results file
    that keeps it whole."""
    by_suite: dict[tuple[str, str, int | None], list[TestResult]] = {}
    for result in results:
        by_suite.setdefault((result.python, result.shard, result.lane), []).append(result)
    root = ET.Element("testsuites", {"name": "testfleet"})
    for key in sorted(by_suite, key=lambda k: (k[0], k[1], k[2] is None, k[2] or 0)):
        label, shard, lane = key
        python = versions.get(label, label)
        where = f"lane {lane}" if lane is not None else "not run"
        properties = {"lane": str(lane) if lane is not None else "none", "python": python}
        if shard:
            properties["shard"] = shard
        name = f"pytest ({where}, python {python}{', shard ' + shard if shard else ''})"
        root.append(_suite(name, properties, by_suite[key], whole_in))
    totals = _count(results)
    for stat in ("tests", "failures", "errors", "skipped", "time"):
        root.set(stat, totals[stat])
    ET.indent(root, space="\t")
    write_atomic(path, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
