"""The durations store: measured test times (setup + call + teardown), merged on every run
and written atomically, never clobbered. A pytest-split `.test_durations` file is read too."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from testfleet.errors import ConfigError
from testfleet.files import write_atomic

FORMAT_VERSION = 1
PYTEST_SPLIT_FILE = ".test_durations"


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable durations file ({exc}); delete it") from None


def _numbers(data: object) -> dict[str, float]:
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float) and v >= 0}


def load(path: Path, project_root: Path) -> dict[str, float]:
    """Known durations: pytest-split's file first, ours on top (ours is newer and merged)."""
    durations = _numbers(_read_json(project_root / PYTEST_SPLIT_FILE))
    ours = _read_json(path)
    if isinstance(ours, dict):
        durations.update(_numbers(ours.get("durations")))
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
    """Update the store with this run's measurements; other tests keep theirs.

    Several runs (or CI shards) may merge into one file at once: the read-modify-write holds
    a lock, and the new content goes to a temp file renamed over the old, so a reader (who
    takes no lock) sees the old or the new file, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        current = _read_json(path)
        durations = _numbers(current.get("durations")) if isinstance(current, dict) else {}
        durations.update({k: round(v, 4) for k, v in measured.items()})
        text = json.dumps(
            {"version": FORMAT_VERSION, "durations": dict(sorted(durations.items()))}, indent=1
        )
        write_atomic(path, (text + "\n").encode("utf-8"))
    return durations
