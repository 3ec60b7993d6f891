"""The durations store: measured test times (setup + call + teardown), merged on every run
and written atomically, never clobbered. A pytest-split `.test_durations` file is read too."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from testfleet.errors import ConfigError

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


def merge(path: Path, measured: Mapping[str, float]) -> dict[str, float]:
    """Update the store with this run's measurements; other tests keep theirs.

    Several runs (or CI shards) may merge into one file: read, update, write to a temp
    file and rename over, so a reader sees the old or the new file, never half of one.
    """
    current = _read_json(path)
    durations = _numbers(current.get("durations")) if isinstance(current, dict) else {}
    durations.update({k: round(v, 4) for k, v in measured.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(
        json.dumps(
            {"version": FORMAT_VERSION, "durations": dict(sorted(durations.items()))}, indent=1
        )
        + "\n",
        encoding="utf-8",
    )
    os.replace(staging, path)
    return durations
