"""What a run made on external servers (databases, Vault mounts), written down before it is
made, so that when the run cannot clean up itself (SIGKILL, a crash) its reaper or the next
run drops it (through each kind's `drop_leftover`, see reaper.py). A normal teardown drops it
through the services and removes the record with the run directory.

One JSON object per line in the run directory's private `external` file:
`{"kind": "postgres", "url": ..., "name": ...}`; the url carries the credentials the run used
(the file is the run's, mode 600, like everything else in the run directory).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from testfleet.files import open_private

FILE_NAME = "external"
# How long dropping one leftover may wait on its server.
SECONDS = 10


def record(run_dir: Path, kind: str, url: str, name: str, **extra: str) -> None:
    entry = {"kind": kind, "url": url, "name": name, **extra}
    fd = open_private(run_dir / FILE_NAME)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def entries(run_dir: Path) -> list[dict[str, Any]]:
    """What `run_dir`'s run recorded, last first (dropped in that order: a lane's database
    before the template it was cloned from); nothing when the record is not a plain file."""
    path = run_dir / FILE_NAME
    if path.is_symlink() or not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    found = []
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                found.append(entry)
    return found
