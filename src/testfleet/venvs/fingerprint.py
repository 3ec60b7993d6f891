"""The fingerprint of everything a venv is built from: a venv is rebuilt only when it
changes, and is reused only when it was fully built (the fingerprint is written last)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from testfleet.venvs.names import normalize

FINGERPRINT_NAME = ".testfleet-fingerprint"
# Bump when the way a venv is built changes, so old ones are rebuilt once. The text is part of
# every fingerprint already written: changing it (even to rename "env") rebuilds every venv.
FINGERPRINT_FORMAT = "testfleet-env 1"

_FINGERPRINT_FILES = ("pyproject.toml", "uv.lock", "setup.py", "setup.cfg")


def fingerprint(
    root: Path,
    *,
    interpreter: Path,
    version: str,
    extras: Sequence[str],
    groups: Sequence[str],
    uv_version: str,
) -> str:
    """sha256 over everything a venv is built from; a change means a rebuild.

    The project's source is not in it: the project is installed editable.
    """
    digest = hashlib.sha256()

    def add(label: str, value: str | bytes) -> None:
        data = value.encode() if isinstance(value, str) else value
        digest.update(f"{label} {len(data)}\n".encode())
        digest.update(data)

    add("format", FINGERPRINT_FORMAT)
    add("interpreter", str(interpreter))
    add("version", version)
    add("uv", uv_version)
    add("extras", ",".join(sorted(normalize(e) for e in extras)))
    add("groups", ",".join(sorted(normalize(g) for g in groups)))
    names = [*_FINGERPRINT_FILES, *sorted(p.name for p in root.glob("requirements*.txt"))]
    for name in names:
        path = root / name
        try:
            add(f"file {name}", path.read_bytes())
        except FileNotFoundError:
            add(f"absent {name}", "")
        except IsADirectoryError:
            add(f"directory {name}", "")
    return digest.hexdigest()


def is_up_to_date(venv_dir: Path, wanted: str) -> bool:
    """The venv was fully built from the same inputs (its fingerprint is written last)."""
    try:
        recorded = (venv_dir / FINGERPRINT_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return recorded == wanted and (venv_dir / "bin" / "python").exists()
