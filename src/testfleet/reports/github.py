"""Failing tests as GitHub Actions annotations: a workflow command on stdout per test,
`::error file=PATH,line=N,title=NODE_ID::message`, which the run's page and the pull request's
diff show. The runner reads them from the job's output, so they need no token and no
`checks: write`, and work on pull requests from forks too."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from testfleet.results import TestResult

# GitHub shows 10 error annotations a step; more are printed for the raw log, up to this.
LIMIT = 50
MESSAGE_CHARS = 500


def enabled(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    """A command's message, escaped as the runner unescapes it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property's value (file, title): also `:` and `,`, which end one."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _path(result: TestResult, root: Path, workspace: Path) -> str | None:
    """The test's file relative to the repository (the workspace), or None when it is not in
    it: GitHub would place the annotation on no file, or on the wrong one."""
    file = result.file or result.nodeid.split("::", 1)[0]
    if not file or not (root / file).is_file():
        return None
    relative = os.path.relpath((root / file).resolve(), workspace.resolve())
    if relative.startswith(".."):
        return None
    return Path(relative).as_posix()


def annotation(
    result: TestResult, *, root: Path, workspace: Path, versions: Mapping[str, str]
) -> str:
    """The `::error ...::` line of one failing test."""
    properties = []
    path = _path(result, root, workspace)
    if path is not None:
        properties.append(f"file={escape_property(path)}")
        if result.line is not None and result.file:
            properties.append(f"line={result.line}")
    properties.append(f"title={escape_property(result.nodeid)}")
    message = f"{result.outcome}: {result.message}" if result.message else result.outcome
    if result.verdict:
        message += f"\n{result.verdict}"
    if result.python:
        message += f"\n(python {versions.get(result.python, result.python)})"
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 3] + "..."
    return f"::error {','.join(properties)}::{escape_data(message)}"


def error_lines(
    results: Sequence[TestResult],
    *,
    root: Path,
    workspace: Path,
    versions: Mapping[str, str],
    limit: int = LIMIT,
) -> tuple[list[str], int]:
    """The lines for the first `limit` failing tests, and how many more failed."""
    failing = [r for r in results if r.failing]
    lines = [
        annotation(r, root=root, workspace=workspace, versions=versions) for r in failing[:limit]
    ]
    return lines, len(failing) - len(lines)
