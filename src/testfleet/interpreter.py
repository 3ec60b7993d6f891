"""The interpreter that runs the suite when `python` is unset: the project's environment when
it has one, so that a testfleet installed in its own environment (`uv tool install`) tests the
checkout with the project's packages, never with its own copies of them.

Imports only the standard library: `testfleet run` asks it which interpreter to start lane 1
with before the rest of testfleet is imported (lanes/early.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

OWN = "testfleet's own"
ACTIVE = "the active $VIRTUAL_ENV"
SETTING = 'python = "PATH" in [tool.testfleet] (or --python PATH)'


@dataclass(frozen=True)
class Interpreter:
    """An interpreter for the lanes, and why it was chosen (said on the run's first line)."""

    path: str
    why: str


def default_interpreter(
    root: Path,
    environ: Mapping[str, str],
    *,
    own_prefix: str = sys.prefix,
    own: str = sys.executable,
) -> Interpreter:
    """In this order: the active environment (`$VIRTUAL_ENV`, as plain `pytest` in that shell
    would run), the project's uv environment (`$UV_PROJECT_ENVIRONMENT`, else `.venv` in the
    project or in the root of the uv workspace it belongs to), else testfleet's own. An
    environment that is testfleet's own is its running interpreter (the path lane 1 was
    started with)."""
    skipped = []
    for folder, why in _candidates(root, environ):
        if _same(folder, Path(own_prefix)):
            if why == ACTIVE:
                continue  # testfleet's own environment, activated to run it: not the project's
            return Interpreter(own, why)
        python = folder / "bin" / "python"
        if os.access(python, os.X_OK):
            return Interpreter(str(python), why)
        skipped.append(f"{why} ({folder}) has no working bin/python")
    if skipped:
        return Interpreter(own, f"{OWN}; {', '.join(skipped)}")
    return Interpreter(own, f"{OWN}: no .venv in the project, no active venv")


def _candidates(root: Path, environ: Mapping[str, str]) -> list[tuple[Path, str]]:
    found = []
    active = environ.get("VIRTUAL_ENV")
    if active:
        found.append((Path(active), ACTIVE))
    uv_env = environ.get("UV_PROJECT_ENVIRONMENT")
    if uv_env:
        found.append((_workspace_root(root) / uv_env, "$UV_PROJECT_ENVIRONMENT"))
    elif (root / ".venv").exists():
        found.append((root / ".venv", "the project's .venv"))
    else:
        workspace = _workspace_root(root)
        if workspace != root and (workspace / ".venv").exists():
            found.append((workspace / ".venv", "the .venv of the uv workspace the project is in"))
    return found


def _workspace_root(root: Path) -> Path:
    """The root of the uv workspace `root` is a member of (where uv puts the environment of
    every member), or `root` itself. Found by its `[tool.uv.workspace]` table; a plain text
    search is enough to find it and keeps this module free of a TOML parser."""
    for folder in root.parents:
        try:
            text = (folder / "pyproject.toml").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "[tool.uv.workspace]" in text:
            return folder
    return root


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def shown(python: str, root: Path) -> str:
    """An interpreter as a line names it: relative to the project when it is inside it."""
    path = Path(python)
    if path.is_absolute() and path.is_relative_to(root):
        return str(path.relative_to(root))
    return python
