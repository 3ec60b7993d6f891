"""GitLab CI: a `parallel: matrix` of Python versions x shards in stage `test`, each running
`testfleet run --shard I/M`, and a `merge` job in stage `merge` that joins their artifacts with
`testfleet merge` and hands GitLab the JUnit and Cobertura reports and the coverage total.

A `durations` job in stage `.pre` hands every shard the same measured durations (the last
merge's, from the cache of this branch, else of the default branch); the merge job pushes the
merged ones back. GitLab reads `.gitlab-ci.yml` at the repository's root only, so a project in
a subfolder gets its jobs there, each changing into the project's folder first.
"""

from __future__ import annotations

import shlex
from typing import Any

from testfleet.ci.model import SHARDS_DIR, Settings

# coverage.py's report ends with "TOTAL  <statements>  <missed>  <percent>%".
COVERAGE_REGEX = r"/^TOTAL\s.*\s(\d+(?:\.\d+)?)%\s*$/"
# Python's images run as root; pip's warning about that says nothing useful in CI.
PIP_INSTALL_UV = (
    "python -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv"
)
# GitLab caches only paths inside the project directory.
CACHE_PATHS = (".cache/uv", ".cache/testfleet")
DURATIONS_KEY = "testfleet-durations-"
PREPARE_MINUTES = 10
ENSURE_DURATIONS = [
    'mkdir -p "$(dirname "$DURATIONS")"',
    # Every shard must plan from the same file: hand them one even when nothing was measured.
    'test -f "$DURATIONS" || printf \'{"version": 1, "durations": {}}\\n\' > "$DURATIONS"',
]


def _into_project(settings: Settings) -> list[str]:
    if settings.placement.at_root:
        return []
    return [f"cd {shlex.quote(settings.placement.project.as_posix())}"]


def _install(settings: Settings) -> list[str]:
    return [
        PIP_INSTALL_UV,
        f"uv tool install {shlex.quote(settings.spec)}",
        'export PATH="$(uv tool dir --bin):$PATH"',
        *_into_project(settings),
    ]


def _minutes(minutes: int) -> str:
    return f"{minutes} minutes"


def _placed(settings: Settings, job: dict[str, Any], minutes: int) -> dict[str, Any]:
    """The job on the runners `--runs-on` names (GitLab's runner tags), with its timeout."""
    placed = dict(job)
    if settings.runs_on:
        placed["tags"] = list(settings.runs_on)
    placed["timeout"] = _minutes(minutes)
    return placed


def _durations_cache(path: str, policy: str) -> dict[str, Any]:
    cache: dict[str, Any] = {
        "key": f"{DURATIONS_KEY}$CI_COMMIT_REF_SLUG",
        "paths": [path],
        "policy": policy,
    }
    if policy == "pull":
        cache["fallback_keys"] = [f"{DURATIONS_KEY}$CI_DEFAULT_BRANCH"]
    else:
        cache["when"] = "always"  # the times of failing runs are right too
    return cache


def pipeline(settings: Settings) -> dict[str, Any]:
    """`.gitlab-ci.yml` at the repository's root."""
    run = [
        "testfleet",
        "run",
        "--shard",
        f"${{SHARD}}/{settings.shards}",
        "--python",
        "${PYTHON}",
    ]
    options = shlex.join(settings.run_options())
    script = " ".join(run) + (f" {options}" if options else "")
    newest = f"python:{settings.newest_python}"
    durations = settings.in_repository(settings.durations)
    minutes = settings.timeout_minutes
    document: dict[str, Any] = {
        "stages": ["test", "merge"],
        "durations": _placed(
            settings,
            {
                "stage": ".pre",
                "image": newest,
                "variables": {"DURATIONS": durations},
                "cache": _durations_cache(durations, "pull"),
                "script": ENSURE_DURATIONS,
                "artifacts": {"paths": [durations], "expire_in": "1 week"},
            },
            min(minutes, PREPARE_MINUTES),
        ),
        "test": _placed(
            settings,
            {
                "stage": "test",
                "image": "python:${PYTHON}",
                # A newer pipeline of the same branch may cancel this one.
                "interruptible": True,
                "parallel": {
                    "matrix": [
                        {
                            "PYTHON": list(settings.pythons),
                            "SHARD": [str(shard) for shard in range(1, settings.shards + 1)],
                        }
                    ]
                },
                "variables": {
                    "UV_CACHE_DIR": "$CI_PROJECT_DIR/.cache/uv",
                    "TESTFLEET_CACHE_DIR": "$CI_PROJECT_DIR/.cache/testfleet",
                    # The build directory is its own mount: uv cannot hard-link into it.
                    "UV_LINK_MODE": "copy",
                },
                "cache": {
                    "key": {"files": list(settings.key_files), "prefix": "py${PYTHON}"},
                    "paths": list(CACHE_PATHS),
                },
                "before_script": _install(settings),
                "script": [script],
                "artifacts": {
                    "when": "always",
                    "paths": [settings.in_repository(SHARDS_DIR) + "/"],
                    "expire_in": "1 week",
                },
            },
            minutes,
        ),
        "merge": _placed(
            settings,
            {
                "stage": "merge",
                "image": newest,
                # Merge also when a shard failed: the report then says which tests failed.
                "when": "always",
                "before_script": _install(settings),
                "script": ["testfleet merge"],
                "coverage": COVERAGE_REGEX,
                "cache": _durations_cache(durations, "push"),
                "artifacts": {
                    "when": "always",
                    "paths": list(settings.report_files),
                    "reports": {
                        "junit": settings.in_repository(settings.junit_xml),
                        "coverage_report": {
                            "coverage_format": "cobertura",
                            "path": settings.in_repository(settings.coverage_xml),
                        },
                    },
                },
            },
            minutes,
        ),
    }
    tool_setup = [PIP_INSTALL_UV, *_into_project(settings)]
    for job, command in (("lint", settings.ruff_command()), ("typecheck", settings.mypy_command())):
        if command is not None:
            document[job] = _placed(
                settings,
                {
                    "stage": "test",
                    "image": newest,
                    "needs": [],
                    "before_script": tool_setup,
                    "script": [command],
                },
                minutes,
            )
    return document
