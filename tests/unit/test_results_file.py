"""The results file: every result, exactly as it was, in an explicit versioned format."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from testfleet.errors import ConfigError
from testfleet.reports.results_file import FORMAT_VERSION, read_results, write_results
from testfleet.results import TestResult

WEIRD = '\x00\x01\x1b[31mred\x1b[0m \udce2 \ufffe "q" \\ </x> \r\n\t ünï 🐍'


def every_kind() -> list[TestResult]:
    return [
        TestResult("tests/a.py::test_ok", "passed", 0.1 + 0.2, lane=0),
        TestResult(f"tests/a.py::test_p[{WEIRD}]", "failed", 2.5, 1, WEIRD, WEIRD, WEIRD),
        TestResult("tests/b.py::T::test_e", "error", 0.0, lane=1, message="crashed", timed=False),
        TestResult("tests/b.py::test_s", "skipped", lane=0, message="no db"),
        TestResult("tests/b.py::test_x", "xfailed", lane=0),
        TestResult("tests/b.py::test_xp", "xpassed", 1e-7, lane=0),
        TestResult("tests/c.py::test_never", "not run", lane=None, timed=False),
    ]


def test_round_trip_keeps_every_result_exactly(tmp_path: Path):
    """Results (any characters, every outcome, lane None, untimed), collection errors and
    the Python version read back equal to what was written, and no temp file is left."""
    path = tmp_path / ".testfleet" / "results.json"
    results = every_kind()
    errors = {"tests/broken.py": f"SyntaxError {WEIRD}", "tests/other.py": ""}
    write_results(path, results, python="3.13.1", collect_errors=errors)
    assert read_results(path) == (results, errors, "3.13.1")
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
    path.read_text(encoding="ascii")  # JSON escapes make it plain ASCII, whatever tests print


def test_file_names_its_format_and_every_result_field(tmp_path: Path):
    """The file says what it is and which version, and holds every TestResult field, so a
    field added to TestResult fails here until the format decides about it."""
    path = tmp_path / "results.json"
    write_results(path, every_kind()[:1], python="3.11.9", collect_errors={})
    document = json.loads(path.read_text())
    assert (document["format"], document["version"]) == ("testfleet-results", FORMAT_VERSION)
    assert document["python"] == "3.11.9"
    assert set(document["results"][0]) == {f.name for f in dataclasses.fields(TestResult)}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "Expecting property name"),
        ('{"format": "testfleet-results", "version": 99}', "format version 99"),
        ('{"version": 1}', "no 'format'"),
        (
            '{"format": "testfleet-results", "version": 1, "python": "3.12", "results": [{}],'
            ' "collect_errors": {}}',
            "a result has no 'outcome'",
        ),
        (
            '{"format": "testfleet-results", "version": 1, "python": "3.12", "results":'
            ' [{"nodeid": "t", "outcome": "won", "duration": 0, "lane": 0, "message": "",'
            ' "text": "", "output": "", "timed": true}], "collect_errors": {}}',
            "outcome 'won'",
        ),
        (
            '{"format": "testfleet-results", "version": 1, "python": "3.12", "results":'
            ' [{"nodeid": "t", "outcome": "passed", "duration": 0, "lane": true, "message": "",'
            ' "text": "", "output": "", "timed": true}], "collect_errors": {}}',
            "'lane'",
        ),
    ],
)
def test_unreadable_or_foreign_file_is_a_config_error_naming_it(
    tmp_path: Path, content: str, reason: str
):
    """A broken file, another format version or a malformed result is refused with the
    file's name and the reason, never half read."""
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(
        ConfigError, match=r"results\.json: not a readable testfleet results file"
    ) as err:
        read_results(path)
    assert reason in str(err.value)


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path):
    """Reading a results file that is not there names the file."""
    with pytest.raises(ConfigError, match=r"missing\.json: .*No such file"):
        read_results(tmp_path / "missing.json")
