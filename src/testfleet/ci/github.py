"""GitHub Actions workflows: a matrix of Python versions x shards that each run
`testfleet run --shard I/M`, and a merge job that joins them with `testfleet merge`.

Services run natively inside each job (testfleet starts them from wheels), so no service
containers are declared. Only the shard directory travels between jobs, as an artifact.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from testfleet.ci.model import (
    REPORT_FILES,
    SERVICE_TOGGLES,
    SHARDS_ARTIFACT_DIR,
    Settings,
    index_variable,
)
from testfleet.errors import ConfigError

# Every action the files use, pinned to a major version tag in one place: the newest majors,
# which run on node24 (actionlint reports the node20 ones as deprecated, to be removed from
# GitHub's runners in September 2026).
CHECKOUT = "actions/checkout@v6"
SETUP_PYTHON = "actions/setup-python@v6"
SETUP_UV = "astral-sh/setup-uv@v7"
CACHE = "actions/cache@v5"
UPLOAD = "actions/upload-artifact@v7"
DOWNLOAD = "actions/download-artifact@v8"
JUNIT_REPORT = "mikepenz/action-junit-report@v6"

RUNNER = "ubuntu-latest"
SHARD_ARTIFACT = "shard-py${{ matrix.python }}-${{ matrix.shard }}"
CACHE_KEY = "testfleet-${{ runner.os }}-py${{ matrix.python }}-"


def _check_no_expression(what: str, value: str) -> None:
    # GitHub evaluates ${{ }} anywhere in a workflow, so a value holding one would run as an
    # expression (and could read secrets) instead of reaching testfleet as text.
    if "${{" in value:
        raise ConfigError(
            f"{what} {value!r} contains '${{{{', which GitHub would evaluate as an expression;"
            " leave it out of the value"
        )


def _checked(settings: Settings) -> Settings:
    if settings.pytest_args is not None:
        _check_no_expression("--pytest-args", settings.pytest_args)
    _check_no_expression("--testfleet-spec", settings.spec)
    return settings


def _credentials(settings: Settings) -> dict[str, str]:
    """Index credentials for the steps that run uv, as references to secrets, never values."""
    return {name: f"${{{{ secrets.{name} }}}}" for name in settings.credential_variables()}


def _with_env(step: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return {**step, "env": env} if env else step


def _setup_python(version: str) -> dict[str, Any]:
    return {"uses": SETUP_PYTHON, "with": {"python-version": version}}


def _setup_uv() -> dict[str, Any]:
    # setup-uv's own cache is off so that one cache step below keeps uv's cache and
    # testfleet's together, in uv's usual place.
    return {"uses": SETUP_UV, "with": {"enable-cache": False, "cache-local-path": "~/.cache/uv"}}


def _install(settings: Settings) -> dict[str, Any]:
    step = {"name": "Install testfleet", "run": f"uv tool install {shlex.quote(settings.spec)}"}
    return _with_env(step, _credentials(settings))


def _cache() -> dict[str, Any]:
    return {
        "name": "Cache uv's downloads and testfleet's initdb results",
        "uses": CACHE,
        "with": {
            "path": "~/.cache/uv\n~/.cache/testfleet\n",
            "key": CACHE_KEY + "${{ hashFiles('pyproject.toml', 'uv.lock') }}",
            "restore-keys": CACHE_KEY,
        },
    }


def _upload_shard() -> dict[str, Any]:
    return {
        "name": "Upload the shard's results",
        "if": "always()",
        "uses": UPLOAD,
        "with": {
            "name": SHARD_ARTIFACT,
            "path": SHARDS_ARTIFACT_DIR + "/",
            # The directory starts with a dot, which upload-artifact skips by default.
            "include-hidden-files": True,
            "retention-days": 7,
        },
    }


def _test_steps(settings: Settings, run: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"uses": CHECKOUT},
        _setup_python("${{ matrix.python }}"),
        _setup_uv(),
        _cache(),
        _install(settings),
        run,
        _upload_shard(),
    ]


def _merge_job(settings: Settings, needs: str, python: str) -> dict[str, Any]:
    return {
        "name": "merge shards",
        "needs": needs,
        # Merge also when a shard failed: the report then says which tests failed.
        "if": "always()",
        "runs-on": RUNNER,
        "permissions": {"contents": "read", "checks": "write"},
        "steps": [
            {"uses": CHECKOUT},
            _setup_python(python),
            _setup_uv(),
            _install(settings),
            {
                "name": "Download every shard's results",
                "uses": DOWNLOAD,
                "with": {
                    "pattern": "shard-*",
                    "merge-multiple": True,
                    "path": SHARDS_ARTIFACT_DIR,
                },
            },
            {"name": "Merge the shards", "run": "testfleet merge"},
            {
                "name": "Upload the merged reports",
                "if": "always()",
                "uses": UPLOAD,
                "with": {
                    "name": "testfleet-report",
                    "path": "\n".join(REPORT_FILES) + "\n",
                    "include-hidden-files": True,
                    "if-no-files-found": "ignore",
                },
            },
            {
                "name": "Show the tests in GitHub's checks",
                "if": "always()",
                "uses": JUNIT_REPORT,
                "with": {"report_paths": ".testfleet/junit.xml", "check_name": "tests"},
            },
        ],
    }


def _tool_jobs(settings: Settings, python: str) -> dict[str, Any]:
    jobs: dict[str, Any] = {}
    ruff, mypy = settings.ruff_command(), settings.mypy_command()
    if ruff is not None:
        jobs["lint"] = {
            "name": "lint (ruff)",
            "runs-on": RUNNER,
            "steps": [{"uses": CHECKOUT}, _setup_uv(), {"name": "ruff check", "run": ruff}],
        }
    if mypy is not None:
        jobs["typecheck"] = {
            "name": "typecheck (mypy)",
            "runs-on": RUNNER,
            "steps": [
                {"uses": CHECKOUT},
                _setup_python(python),
                _setup_uv(),
                _with_env({"name": "mypy", "run": mypy}, _credentials(settings)),
            ],
        }
    return jobs


def workflow(settings: Settings) -> dict[str, Any]:
    """`.github/workflows/tests.yml`: runs on push and pull requests."""
    settings = _checked(settings)
    command = [
        "testfleet",
        "run",
        "--shard",
        f"${{{{ matrix.shard }}}}/{settings.shards}",
        "--python",
        "${{ matrix.python }}",
    ]
    # Matrix values are ours (versions, numbers); the rest is quoted for the shell.
    options = shlex.join(settings.run_options())
    run = {"name": "Run this shard", "run": " ".join(command) + (f" {options}" if options else "")}
    jobs: dict[str, Any] = {
        "test": {
            "name": f"tests (py${{{{ matrix.python }}}}, shard {command[3]})",
            "runs-on": RUNNER,
            "strategy": {
                "fail-fast": False,
                "matrix": {
                    "python": list(settings.pythons),
                    "shard": list(range(1, settings.shards + 1)),
                },
            },
            "steps": _test_steps(settings, _with_env(run, _credentials(settings))),
        },
        "merge": _merge_job(settings, "test", settings.newest_python),
    }
    jobs.update(_tool_jobs(settings, settings.newest_python))
    return {
        "name": "tests",
        "on": ["push", "pull_request"],
        "permissions": {"contents": "read"},
        "defaults": {"run": {"shell": "bash"}},
        "jobs": jobs,
    }


# Inputs reach the script as env vars, never pasted into it: an input is text from the
# caller and must not become shell code.
REUSABLE_RUN = """\
args=(--shard "$SHARD/$SHARDS" --python "$PYTHON")
if [ -n "$PYTEST_ARGS" ]; then args+=(--pytest-args "$PYTEST_ARGS"); fi
if [ "$TEST_TIMEOUT" != "0" ]; then args+=(--test-timeout "$TEST_TIMEOUT"); fi
testfleet run "${args[@]}"
"""

SHARD_LIST = """\
case "$SHARDS" in
  '' | *[!0-9]* | 0)
    echo "::error::the shards input must be a whole number from 1 (got '$SHARDS')"
    exit 1
    ;;
esac
echo "list=[$(seq -s , 1 "$SHARDS")]" >> "$GITHUB_OUTPUT"
"""


def reusable(settings: Settings) -> dict[str, Any]:
    """`.github/workflows/testfleet.yml`: the same jobs behind `workflow_call` inputs."""
    settings = _checked(settings)
    inputs: dict[str, Any] = {
        "python-versions": {
            "description": 'Python versions to test, as a JSON list such as ["3.12", "3.13"]',
            "type": "string",
            "default": json.dumps(list(settings.pythons)),
        },
        "shards": {
            "description": "how many machines share each version's tests",
            "type": "number",
            "default": settings.shards,
        },
        "pytest-args": {
            "description": "arguments for pytest, as one shell-quoted string ('' for the config's)",
            "type": "string",
            "default": settings.pytest_args or "",
        },
        "test-timeout": {
            "description": "fail a test that runs longer than this many seconds (0: no limit)",
            "type": "number",
            "default": settings.test_timeout or 0,
        },
    }
    for toggle, kind in SERVICE_TOGGLES.items():
        inputs[f"enable-{toggle}"] = {
            "description": (
                f"sets TESTFLEET_ENABLE_{toggle.upper()} for the tests; the services testfleet"
                " starts come from [tool.testfleet] in pyproject.toml"
            ),
            "type": "boolean",
            "default": kind in settings.kinds,
        }
    secrets = {
        f"{index_variable(index)}_{part}": {
            "description": f"the {part.lower()} uv sends to the {index} index",
            "required": False,
        }
        for index in settings.indexes
        for part in ("USERNAME", "PASSWORD")
    }
    call: dict[str, Any] = {"inputs": inputs}
    if secrets:
        call["secrets"] = secrets
    run = {
        "name": "Run this shard",
        "env": {
            "SHARD": "${{ matrix.shard }}",
            "SHARDS": "${{ inputs.shards }}",
            "PYTHON": "${{ matrix.python }}",
            "PYTEST_ARGS": "${{ inputs.pytest-args }}",
            "TEST_TIMEOUT": "${{ inputs.test-timeout }}",
            **_credentials(settings),
        },
        "run": REUSABLE_RUN,
    }
    toggles = {
        f"TESTFLEET_ENABLE_{toggle.upper()}": f"${{{{ inputs.enable-{toggle} }}}}"
        for toggle in SERVICE_TOGGLES
    }
    merge_python = "${{ fromJSON(inputs.python-versions)[0] }}"
    jobs: dict[str, Any] = {
        "shards": {
            "name": "count shards",
            "runs-on": RUNNER,
            "outputs": {"list": "${{ steps.count.outputs.list }}"},
            "steps": [
                {"id": "count", "env": {"SHARDS": "${{ inputs.shards }}"}, "run": SHARD_LIST}
            ],
        },
        "test": {
            "name": "tests (py${{ matrix.python }}, shard ${{ matrix.shard }}/"
            "${{ inputs.shards }})",
            "needs": "shards",
            "runs-on": RUNNER,
            "strategy": {
                "fail-fast": False,
                "matrix": {
                    "python": "${{ fromJSON(inputs.python-versions) }}",
                    "shard": "${{ fromJSON(needs.shards.outputs.list) }}",
                },
            },
            "env": toggles,
            "steps": _test_steps(settings, run),
        },
        "merge": _merge_job(settings, "test", merge_python),
    }
    jobs.update(_tool_jobs(settings, merge_python))
    return {
        "name": "testfleet",
        "on": {"workflow_call": call},
        "permissions": {"contents": "read"},
        "defaults": {"run": {"shell": "bash"}},
        "jobs": jobs,
    }


def caller(settings: Settings, uses: str) -> dict[str, Any]:
    """An example workflow that calls the reusable one with every input spelled out."""
    given: dict[str, Any] = {
        "python-versions": json.dumps(list(settings.pythons)),
        "shards": settings.shards,
    }
    if settings.pytest_args is not None:
        given["pytest-args"] = settings.pytest_args
    if settings.test_timeout is not None:
        given["test-timeout"] = settings.test_timeout
    for toggle, kind in SERVICE_TOGGLES.items():
        given[f"enable-{toggle}"] = kind in settings.kinds
    return {
        "name": "tests",
        "on": ["push", "pull_request"],
        "permissions": {"contents": "read"},
        "jobs": {
            "tests": {
                "uses": uses,
                # The merge job publishes a check run with the test report.
                "permissions": {"contents": "read", "checks": "write"},
                "with": given,
                "secrets": "inherit",
            }
        },
    }
