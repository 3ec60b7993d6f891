"""The durations store: measured test times (setup + call + teardown), merged on every run
and written atomically, never clobbered. A pytest-split `.test_durations` file is read too.

A file that is not a durations file at all is refused (it may be some other file the setting
points at, which a merge would overwrite). An entry that cannot be a test's time (NaN, negative,
absurd) is left out with a note: durations only balance the lanes, and one bad entry must not
stop a run from planning."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from testfleet.console import say
from testfleet.errors import ConfigError
from testfleet.files import write_atomic

FORMAT_VERSION = 1
PYTEST_SPLIT_FILE = ".test_durations"
# The longest a test's measured time can plausibly be: a day, far past what any CI job runs
# (GitHub's hosted jobs stop at 6 hours, GitLab's default timeout is 1 hour). A larger value is
# a unit slip (milliseconds written as seconds), a clock jump or a corrupted file, not a
# measurement. Left in, it puts its test alone on a lane (or a CI shard) and crowds the rest
# onto the others, and values near 1e308 add up to inf, after which no two loads compare.
MAX_SECONDS = 86_400.0

_ABSENT = object()  # no file, as opposed to a file holding JSON `null`
_noted: set[Path] = set()  # files whose unusable entries were already noted in this process


def unusable(value: object) -> str | None:
    """Why `value` cannot be a test's measured time in seconds; None when it can be."""
    # bool is an int to isinstance, but `true` is no time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    # Compared as it is, not as a float: an integer of 400 digits does not convert.
    if value < 0:
        return "negative"
    if value > MAX_SECONDS:
        return f"over a day ({MAX_SECONDS:g} s), which no test plausibly takes"
    return None


def usable(value: object) -> bool:
    return unusable(value) is None


def shown(value: object) -> str:
    """A value for a one-line message: a 400-digit number is cut short."""
    text = repr(value)
    return text if len(text) <= 24 else text[:20] + "..."


def _kind(value: object) -> str:
    """What a JSON value is, in the words of a message."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else "null"


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _ABSENT
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable durations file ({exc}); delete it") from None


def _table(path: Path, *, ours: bool) -> dict[str, object]:
    """The file's test ids and values as written; {} when there is no file."""
    data = _read_json(path)
    if data is _ABSENT:
        return {}
    if ours and isinstance(data, dict):
        if "durations" not in data:
            raise ConfigError(f"{path}: not a durations file (no 'durations' object); delete it")
        data = data["durations"]
        what = f"'durations' is {_kind(data)}, not an object"
    else:
        what = f"{_kind(data)}, not an object of test ids and seconds"
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a durations file ({what}); delete it")
    return data


def _usable(path: Path, table: Mapping[str, object], *, note: str | None) -> dict[str, float]:
    """The entries that can be test times; the others noted (once a process) with `note`,
    what becomes of them."""
    kept: dict[str, float] = {}
    left_out: list[tuple[str, object, str]] = []
    for nodeid, value in table.items():
        why = unusable(value)
        if why is None:
            kept[nodeid] = float(value)  # type: ignore[arg-type]  # a number, checked above
        else:
            left_out.append((nodeid, value, why))
    if left_out and note is not None and path not in _noted:
        _noted.add(path)
        nodeid, value, why = left_out[0]
        say(
            f"{path}: left out {len(left_out)} unusable duration(s) (e.g. {nodeid} ="
            f" {shown(value)}: {why}); {note}"
        )
    return kept


def load(path: Path, project_root: Path) -> dict[str, float]:
    """Known durations: pytest-split's file first, ours on top (ours is newer and merged)."""
    split_file = project_root / PYTEST_SPLIT_FILE
    unknown = "those tests are planned as tests of unknown duration"
    durations = _usable(split_file, _table(split_file, ours=False), note=unknown)
    # Ours heals: merge() writes back only the usable entries.
    ours = f"{unknown}, and the next run or merge writes the file without them"
    durations.update(_usable(path, _table(path, ours=True), note=ours))
    return durations


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for `path` across a read-modify-write.

    The lock lives on a sibling file that stays in place: `path` itself is replaced on every
    write, and a lock on a replaced file guards nothing.
    """
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def merge(path: Path, measured: Mapping[str, float]) -> dict[str, float]:
    """Update the store with this run's measurements; other tests keep theirs. Unusable
    entries, the file's or the run's, are not written: the file heals on the next merge.

    Several runs (or CI shards) may merge into one file at once: the read-modify-write holds
    a lock, and the new content goes to a temp file renamed over the old, so a reader (who
    takes no lock) sees the old or the new file, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        durations = _usable(path, _table(path, ours=True), note=None)
        durations.update({k: round(float(v), 4) for k, v in measured.items() if usable(v)})
        text = json.dumps(
            {"version": FORMAT_VERSION, "durations": dict(sorted(durations.items()))},
            indent=1,
            allow_nan=False,  # NaN and Infinity are not JSON: other tools cannot read them
        )
        write_atomic(path, (text + "\n").encode("utf-8"))
    return durations
