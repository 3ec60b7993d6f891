"""GitLab CI: a `parallel: matrix` of Python versions x shards in stage `test`, each running
`testfleet run --shard I/M`, and a `merge` job in stage `merge` that joins their artifacts with
`testfleet merge` and hands GitLab the JUnit and Cobertura reports."""

from __future__ import annotations

import shlex
from typing import Any

from testfleet.ci.model import REPORT_FILES, SHARDS_ARTIFACT_DIR, Settings

# coverage.py's report ends with "TOTAL  <statements>  <missed>  <percent>%".
COVERAGE_REGEX = r"/^TOTAL\s.*\s(\d+(?:\.\d+)?)%\s*$/"
# Python's images run as root; pip's warning about that says nothing useful in CI.
PIP_INSTALL_UV = (
    "python -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv"
)
# GitLab caches only paths inside the project directory.
CACHE_PATHS = (".cache/uv", ".cache/testfleet")


def _install(settings: Settings) -> list[str]:
    return [
        PIP_INSTALL_UV,
        f"uv tool install {shlex.quote(settings.spec)}",
        'export PATH="$(uv tool dir --bin):$PATH"',
    ]


def pipeline(settings: Settings, *, locked: bool = False) -> dict[str, Any]:
    """`.gitlab-ci.yml`; `locked`: the project has a uv.lock (the cache key follows it)."""
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
    key_files = ["pyproject.toml", "uv.lock"] if locked else ["pyproject.toml"]
    document: dict[str, Any] = {
        "stages": ["test", "merge"],
        "test": {
            "stage": "test",
            "image": "python:${PYTHON}",
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
                "key": {"files": key_files, "prefix": "py${PYTHON}"},
                "paths": list(CACHE_PATHS),
            },
            "before_script": _install(settings),
            "script": [script],
            "artifacts": {
                "when": "always",
                "paths": [SHARDS_ARTIFACT_DIR + "/"],
                "expire_in": "1 week",
            },
        },
        "merge": {
            "stage": "merge",
            "image": newest,
            # Merge also when a shard failed: the report then says which tests failed.
            "when": "always",
            "before_script": _install(settings),
            "script": ["testfleet merge"],
            "coverage": COVERAGE_REGEX,
            "artifacts": {
                "when": "always",
                "paths": list(REPORT_FILES),
                "reports": {
                    "junit": ".testfleet/junit.xml",
                    "coverage_report": {
                        "coverage_format": "cobertura",
                        "path": ".testfleet/coverage.xml",
                    },
                },
            },
        },
    }
    tool_setup = [PIP_INSTALL_UV]
    for job, command in (("lint", settings.ruff_command()), ("typecheck", settings.mypy_command())):
        if command is not None:
            document[job] = {
                "stage": "test",
                "image": newest,
                "needs": [],
                "before_script": tool_setup,
                "script": [command],
            }
    return document
