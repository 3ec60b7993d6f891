"""The run's results as plain JSON, written before any other report.

JSON escapes every character, so this file cannot fail on what a test printed, and every
other report (and, later, the merge of CI shards) can be made again from it. The format is
explicit and versioned: a reader refuses a version it does not know instead of guessing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from testfleet.errors import ConfigError
from testfleet.files import write_atomic
from testfleet.results import Outcome, TestResult

FORMAT = "testfleet-results"
FORMAT_VERSION = 1
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))
# Where a run keeps it, relative to the project: what a cut in the other reports points to.
RESULTS_FILE = ".testfleet/results.json"
# How much of a failure's text or output the JUnit XML and the terminal show; this file keeps
# the whole. Most of it from the end, where the error is; the start says what was running.
SHOWN = 20_000
SHOWN_HEAD = 5_000


def shown(text: str, *, whole_in: str = RESULTS_FILE, limit: int = SHOWN) -> str:
    """`text` as the JUnit XML and the terminal show it: whole when short, else its start and
    its end with the cut marked between them, each cut at a line's end so that neither part
    starts or stops mid-line (unless a single line is longer than its part)."""
    if len(text) <= limit:
        return text
    head_size = min(SHOWN_HEAD, limit // 4)
    head = text[:head_size]
    if "\n" in head:
        head = head[: head.rindex("\n") + 1]
    start = len(text) - (limit - head_size)
    tail = text[start:]
    if text[start - 1] != "\n" and "\n" in tail[:-1]:
        tail = tail[tail.index("\n") + 1 :]
    cut = len(text) - len(head) - len(tail)
    if not head.endswith("\n"):
        head += "\n"
    return f"{head}[... {cut} characters cut; the whole is in {whole_in}]\n{tail}"


def _entry(result: TestResult) -> dict[str, Any]:
    return {
        "nodeid": result.nodeid,
        "outcome": result.outcome,
        "duration": result.duration,
        "lane": result.lane,
        "message": result.message,
        "text": result.text,
        "output": result.output,
        "timed": result.timed,
        "python": result.python,
        "shard": result.shard,
        "verdict": result.verdict,
        "flaky": result.flaky,
        "file": result.file,
        "line": result.line,
    }


def write_results(
    path: Path,
    results: Sequence[TestResult],
    *,
    python: str,
    collect_errors: Mapping[str, str],
) -> None:
    """Write every result and collection error to `path`, replacing it atomically."""
    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "python": python,
        "results": [_entry(result) for result in results],
        "collect_errors": dict(collect_errors),
    }
    # ensure_ascii keeps lone surrogates (undecodable output) representable: the file is
    # pure ASCII and reads back to the very same strings.
    data = (json.dumps(document, ensure_ascii=True, indent=1) + "\n").encode("ascii")
    write_atomic(path, data)


class _Invalid(ValueError):
    pass


def _field(entry: Mapping[str, Any], key: str, *kinds: type) -> Any:
    if key not in entry:
        raise _Invalid(f"a result has no {key!r}")
    value = entry[key]
    # bool is an int to isinstance, but a lane or duration of `true` is as wrong as "1".
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _Invalid(f"{key!r} of a result is {value!r}")
    return value


def _duration(entry: Mapping[str, Any]) -> float:
    value = _field(entry, "duration", int, float)
    # No clock measures NaN, a negative time or one past a float (which would not convert):
    # such a value was not written by a run, and would poison every sum of durations.
    if not 0 <= value <= sys.float_info.max:
        raise _Invalid(f"'duration' of a result is {value!r}")
    return float(value)


def _result(entry: object) -> TestResult:
    if not isinstance(entry, dict):
        raise _Invalid(f"a result is {type(entry).__name__}, not an object")
    outcome = _field(entry, "outcome", str)
    if outcome not in OUTCOMES:
        raise _Invalid(f"unknown outcome {outcome!r}")
    return TestResult(
        nodeid=_field(entry, "nodeid", str),
        outcome=outcome,
        duration=_duration(entry),
        lane=_field(entry, "lane", int, type(None)),
        message=_field(entry, "message", str),
        text=_field(entry, "text", str),
        output=_field(entry, "output", str),
        timed=_field(entry, "timed", bool),
        python=_field(entry, "python", str),
        shard=_field(entry, "shard", str),
        # Added within format version 1: files written before lack them.
        verdict=_field(entry, "verdict", str) if "verdict" in entry else "",
        flaky=_field(entry, "flaky", bool) if "flaky" in entry else False,
        file=_field(entry, "file", str) if "file" in entry else "",
        line=_field(entry, "line", int, type(None)) if "line" in entry else None,
    )


def _parse(document: object) -> tuple[list[TestResult], dict[str, str], str]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _Invalid(f"no 'format': {FORMAT!r}")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise _Invalid(
            f"format version {version!r}, this testfleet reads version {FORMAT_VERSION};"
            " write it with the same testfleet version that reads it"
        )
    python = document.get("python")
    results = document.get("results")
    errors = document.get("collect_errors")
    if not isinstance(python, str):
        raise _Invalid("'python' is not a string")
    if not isinstance(results, list):
        raise _Invalid("'results' is not a list")
    if not isinstance(errors, dict) or not all(isinstance(v, str) for v in errors.values()):
        raise _Invalid("'collect_errors' is not an object of strings")
    return [_result(entry) for entry in results], dict(errors), python


def read_results(path: Path) -> tuple[list[TestResult], dict[str, str], str]:
    """(results, collection errors, Python version) from a file `write_results` wrote."""
    try:
        document = json.loads(path.read_bytes())
        return _parse(document)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: not a readable testfleet results file ({reason})") from None
