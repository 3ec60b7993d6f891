"""The suite's test ids, collected in the target interpreter without services, as a lane
collects them (its own pytest cache, basetemp and TMPDIR) and as the lane plugin reports them
(pytest's terminal output changes with -q, -vv and plugins)."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testfleet import pytest_cache
from testfleet.envvars import placeholder_values, process_environ
from testfleet.errors import ConfigError
from testfleet.files import private_dir
from testfleet.kinds import KINDS
from testfleet.lanes.launch import link_package, on_pythonpath, own_dirs
from testfleet.placeholders import expand
from testfleet.project import Project
from testfleet.specs import TABLE

# How many of pytest's lines an error shows under its one line.
DETAIL_LINES = 15
# pytest's line naming an error, after its margin ("E   ", "INTERNALERROR> "): an exception
# ("AttributeError: ...") or pytest's own complaint ("ERROR: file or directory not found").
_MARGIN = re.compile(r"^(?:INTERNALERROR>|E\s)\s*")
_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b|ERROR:|\S+: error:)"
)
# An error that says a server was not there: plan starts none, so only these are its doing.
_CONNECTION = re.compile(
    r"connect|refused|unreachable|getaddrinfo|name or service not known|no route to host",
    re.IGNORECASE,
)


def planning_args(project: Project) -> list[str]:
    """pytest-args with placeholders filled as lane 1 would see them, from each service's
    typical values (nothing is started to plan): `--redis-url={valkey.url}` must still parse."""
    config = project.config
    views = {name: KINDS[spec.kind].planned(spec) for name, spec in config.services.items()}
    common = {
        "lane": "1",
        "lanes": "1",
        "run_id": "plan",
        "run_dir": str(project.root / ".testfleet"),
        "project_dir": str(project.root),
    }
    values = placeholder_values(None, views, common)
    return [expand(a, values, where=f"{TABLE}.pytest-args") for a in config.pytest_args]


def collected(project: Project, python: str, args: Sequence[str]) -> tuple[int, str, Any]:
    """pytest's collection in `python` without services, as the lane plugin reports it:
    (exit code, its output, the plugin's report or None).

    It runs as a lane's pytest does (lanes/launch.py): pytest's cache is on (a conftest may
    read `config.cache`, `--lf` may be among the pytest-args) but in a directory of its own,
    seeded with the project's last failures, as are basetemp and TMPDIR; the project's
    .pytest_cache is never written."""
    with tempfile.TemporaryDirectory(prefix="testfleet-collect-") as name:
        folder = Path(name)
        target = folder / "collected.json"
        argv = [python, "-m", "pytest", "--collect-only", "-q", "-p", "testfleet.worker.plugin"]
        argv += [*args, *own_dirs(folder)]
        env = on_pythonpath(process_environ(python), link_package(folder))
        env["TESTFLEET_COLLECT_FILE"] = str(target)
        env["TMPDIR"] = str(private_dir(folder / "tmp"))
        env.pop("TESTFLEET_QUEUE", None)
        pytest_cache.seed_lastfailed(project, folder / "pytest_cache")
        result = subprocess.run(
            argv, cwd=project.root, env=env, capture_output=True, text=True, check=False
        )
        try:
            report = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            report = None
    return result.returncode, result.stdout + result.stderr, report


def collect(project: Project, python: str | None = None) -> list[str]:
    """The suite's test ids, collected in the target interpreter without any services, as
    the lane plugin reports them (pytest's terminal output changes with -q, -vv, plugins)."""
    code, output, report = collected(project, python or project.python, planning_args(project))
    if code not in (0, 5) or report is None or report["errors"]:
        raise collection_error(code, output, report["errors"] if report else {})
    return list(report["nodeids"])


def collection_error(code: int, output: str, errors: Mapping[str, str]) -> ConfigError:
    """pytest's own error as one line (the first module that did not import, or the error
    that stopped pytest), its lines below. Services are named only when the error is a
    connection that failed: plan starts none, and everything else fails under run too."""
    if errors:
        module, text = next(iter(errors.items()))
        more = len(errors) - 1
        where = f"{module}: " if module else ""
        headline = where + error_line(text) + (f" (and {more} more module(s))" if more else "")
        lines = text.strip().splitlines()
    else:
        headline = error_line(output)
        lines = output.strip().splitlines()
    hint = (
        "; `testfleet plan` starts no services, so code that connects while pytest collects"
        " fails here: connect in a fixture instead"
        if _CONNECTION.search(headline)
        else "; fix it, then plan again (pytest's lines below)"
    )
    return ConfigError(
        f"collecting the tests failed (pytest exit code {code}): {headline}{hint}",
        details="\n".join(lines[-DETAIL_LINES:]),
    )


def error_line(text: str) -> str:
    """The last line of pytest's output that names an error, without pytest's margin; else
    its last line."""
    lines = [_MARGIN.sub("", line).strip() for line in text.strip().splitlines()]
    named = [line for line in lines if _ERROR_LINE.match(line)]
    chosen = named[-1] if named else next((line for line in reversed(lines) if line), "")
    return chosen or "pytest printed nothing"
