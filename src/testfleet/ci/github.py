"""GitHub Actions workflows: a matrix of Python versions x shards that each run
`testfleet run --shard I/M`, and a merge job that joins them with `testfleet merge`.

Services run inside each job (testfleet starts them from wheels), so no service containers
are declared. A `prepare` job hands every shard the same measured durations (restored from the
last merge's cache); shards hand their results to the merge job as artifacts; the merge job
keeps the merged durations for the next run. Every job names its runner, its timeout and its
permissions; the workflow has none of its own.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from testfleet.ci import github_steps as steps
from testfleet.ci.model import SERVICE_TOGGLES, SHARDS_DIR, Settings
from testfleet.errors import ConfigError

READ = {"contents": "read"}
# A new push to a pull request cancels its running workflow; pushes to a branch queue instead,
# so every commit of the default branch gets its durations measured.
CONCURRENCY = {
    "group": "${{ github.workflow }}-${{ github.event.pull_request.number || github.ref }}",
    "cancel-in-progress": "${{ github.event_name == 'pull_request' }}",
}
PREPARE_MINUTES = 10


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
    _check_no_expression("the testfleet spec", settings.spec)
    # The lint and type-check steps carry the project's own requirements and extras, read
    # from pyproject.toml: text nobody typed on this command line, and GitHub evaluates it.
    for tool in (settings.ruff, settings.mypy):
        if tool is not None:
            _check_no_expression("pyproject.toml's requirement", tool.requirement)
    for name in (*settings.extras, *settings.dependency_groups):
        _check_no_expression("the extra or dependency group", name)
    _check_no_expression("the project's folder", settings.placement.project.as_posix())
    return settings


def runs_on(labels: tuple[str, ...]) -> str | list[str]:
    return labels[0] if len(labels) == 1 else list(labels)


# One label as it is, several as a JSON list: what the reusable workflow's runs-on input takes.
RUNS_ON_INPUT = (
    "${{ startsWith(inputs.runs-on, '[') && fromJSON(inputs.runs-on) || inputs.runs-on }}"
)


def _runs_on_input(labels: tuple[str, ...]) -> str:
    return labels[0] if len(labels) == 1 else json.dumps(list(labels))


def _quoted_list(paths: tuple[str, ...]) -> str:
    return ", ".join(f"'{path}'" for path in paths)


def triggers(settings: Settings, workflow_file: str | None) -> dict[str, Any]:
    """Pushes to the default branch and pull requests, not both for one commit of a pull
    request; in a monorepo only when the project (or this workflow) changed."""
    push: dict[str, Any] = {"branches": [settings.placement.default_branch]}
    pull_request: dict[str, Any] = {}
    if not settings.placement.at_root:
        paths = [f"{settings.placement.project.as_posix()}/**"]
        if workflow_file is not None:
            paths.append(workflow_file)
        push["paths"] = paths
        pull_request["paths"] = paths
    return {"push": push, "pull_request": pull_request, "workflow_dispatch": {}}


def _job(settings: Settings, name: str, *, working_directory: bool = True) -> dict[str, Any]:
    job: dict[str, Any] = {
        "name": name,
        "runs-on": runs_on(settings.runs_on),
        "timeout-minutes": settings.timeout_minutes,
        "permissions": dict(READ),
    }
    if working_directory and not settings.placement.at_root:
        job["defaults"] = {"run": {"working-directory": settings.placement.project.as_posix()}}
    return job


def _prepare_job(settings: Settings) -> dict[str, Any]:
    durations = settings.in_repository(settings.durations)
    job = _job(settings, "prepare (durations)", working_directory=False)
    job["timeout-minutes"] = min(settings.timeout_minutes, PREPARE_MINUTES)
    job["outputs"] = {
        "durations-dir": "${{ steps.durations.outputs.dir }}",
    }
    job["steps"] = [steps.checkout(sparse=durations), *steps.restore_durations(durations)]
    return job


def _shard_steps(settings: Settings, run: dict[str, Any], python: str) -> list[dict[str, Any]]:
    return [
        steps.checkout(),
        steps.setup_python(python),
        steps.setup_uv(),
        steps.cache(_quoted_list(settings.key_files)),
        steps.install(settings, settings.spec),
        steps.download_durations("${{ needs.prepare.outputs.durations-dir }}"),
        run,
        steps.upload(
            "Upload the shard's results",
            steps.SHARD_ARTIFACT,
            settings.in_repository(SHARDS_DIR) + "/",
            always=True,
        ),
    ]


def _merge_job(settings: Settings, python: str, spec: str) -> dict[str, Any]:
    job = _job(settings, "merge shards")
    job["needs"] = ["prepare", "test"]
    # Merge also when a shard failed (the report then says which tests failed), not when the
    # run was cancelled or never got its durations.
    job["if"] = "${{ !cancelled() && needs.prepare.result == 'success' }}"
    durations = settings.in_repository(settings.durations)
    job["steps"] = [
        steps.checkout(),
        steps.setup_python(python),
        steps.setup_uv(),
        steps.install(settings, spec),
        steps.download_durations("${{ needs.prepare.outputs.durations-dir }}"),
        steps.download_shards(settings.in_repository(SHARDS_DIR)),
        {"name": "Merge the shards", "run": "testfleet merge\n"},
        steps.upload(
            "Upload the merged reports",
            steps.REPORT_ARTIFACT,
            "\n".join(settings.report_files) + "\n",
            always=True,
        ),
        steps.save_durations(durations),
    ]
    return job


def _tool_jobs(
    settings: Settings, python: str, make_job: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    jobs: dict[str, Any] = {}
    ruff, mypy = settings.ruff_command(), settings.mypy_command()
    if ruff is not None:
        lint = make_job("lint (ruff)")
        lint["steps"] = [steps.checkout(), steps.setup_uv(), {"name": "ruff check", "run": ruff}]
        jobs["lint"] = lint
    if mypy is not None:
        typecheck = make_job("typecheck (mypy)")
        typecheck["steps"] = [
            steps.checkout(),
            steps.setup_python(python),
            steps.setup_uv(),
            steps.with_env({"name": "mypy", "run": mypy}, steps.credentials(settings)),
        ]
        jobs["typecheck"] = typecheck
    return jobs


def workflow(settings: Settings, workflow_file: str | None = None) -> dict[str, Any]:
    """The project's workflow (`.github/workflows/tests.yml`); `workflow_file`: where it is
    written, from the repository's root (a monorepo's workflow also runs when it changes)."""
    settings = _checked(settings)
    # Matrix values reach the script as env vars, as every value does (they are ours, but a
    # script that pastes no expression cannot be made to run one); the options are quoted.
    options = shlex.join(settings.run_options())
    command = f'testfleet run --shard "$SHARD/{settings.shards}" --python "$PYTHON"'
    run = steps.with_env(
        {
            "name": "Run this shard",
            "env": {"SHARD": "${{ matrix.shard }}", "PYTHON": "${{ matrix.python }}"},
            "run": command + (f" {options}" if options else "") + "\n",
        },
        steps.credentials(settings),
    )
    shard = f"${{{{ matrix.shard }}}}/{settings.shards}"
    test = _job(settings, f"tests (py${{{{ matrix.python }}}}, shard {shard})")
    test["needs"] = "prepare"
    test["strategy"] = {
        "fail-fast": False,
        "matrix": {
            "python": list(settings.pythons),
            "shard": list(range(1, settings.shards + 1)),
        },
    }
    test["steps"] = _shard_steps(settings, run, "${{ matrix.python }}")
    jobs: dict[str, Any] = {
        "prepare": _prepare_job(settings),
        "test": test,
        "merge": _merge_job(settings, settings.newest_python, settings.spec),
    }
    jobs.update(_tool_jobs(settings, settings.newest_python, lambda name: _job(settings, name)))
    name = "tests" if settings.placement.at_root else f"tests ({settings.placement.project})"
    return {
        "name": name,
        "on": triggers(settings, workflow_file),
        "permissions": {},
        "concurrency": dict(CONCURRENCY),
        "defaults": {"run": {"shell": "bash"}},
        "jobs": jobs,
    }


# The reusable workflow's run step: every input arrives as an env var.
REUSABLE_RUN = """\
args=(--shard "$SHARD/$SHARDS" --python "$PYTHON")
if [ -n "$PYTEST_ARGS" ]; then args+=(--pytest-args "$PYTEST_ARGS"); fi
if [ "$PER_TEST_TIMEOUT" != "0" ]; then args+=(--test-timeout "$PER_TEST_TIMEOUT"); fi
testfleet run "${args[@]}"
"""

# The enable-* inputs as the kinds `testfleet run --with` starts (TESTFLEET_WITH, which merge
# reads too: a project with no [tool.testfleet] is made of them alone).
SERVICES = """\
with=()
{toggles}
echo "with=$(IFS=,; echo "${{with[*]}}")" >> "$GITHUB_OUTPUT"
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

# A generic workflow's paths come from its inputs, relative to the repository's root.
GENERIC_PROJECT = "${{ inputs.working-directory }}"
GENERIC_DURATIONS = (
    "${{ inputs.working-directory == '.' && inputs.durations-file"
    " || format('{0}/{1}', inputs.working-directory, inputs.durations-file) }}"
)
GENERIC_REPORTS = (".testfleet/junit.xml", ".testfleet/coverage.xml")


def _toggle_lines() -> str:
    return "\n".join(
        f'if [ "$ENABLE_{toggle.upper()}" = "true" ]; then with+=({kind}); fi'
        for toggle, kind in SERVICE_TOGGLES.items()
    )


def _inputs(settings: Settings) -> dict[str, Any]:
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
        "runs-on": {
            "description": "the runner of every job: one label (ubuntu-latest) or a JSON list"
            ' of labels (["self-hosted", "linux", "X64"])',
            "type": "string",
            "default": _runs_on_input(settings.runs_on),
        },
        "timeout-minutes": {
            "description": "the most minutes a job may take before GitHub stops it",
            "type": "number",
            "default": settings.timeout_minutes,
        },
        "per-test-timeout-seconds": {
            "description": "fail one test that runs longer than this many seconds (0: no limit)",
            "type": "number",
            "default": settings.test_timeout or 0,
        },
        "pytest-args": {
            "description": "arguments for pytest, as one shell-quoted string ('' for the config's)",
            "type": "string",
            "default": settings.pytest_args or "",
        },
        "testfleet-spec": {
            "description": "what `uv tool install` installs (pinned to the testfleet that wrote"
            " this file)",
            "type": "string",
            "default": settings.spec,
        },
    }
    if settings.generic:
        inputs["working-directory"] = {
            "description": "the project's folder in the repository (where pyproject.toml is)",
            "type": "string",
            "default": ".",
        }
        inputs["durations-file"] = {
            "description": "the project's durations file, relative to its folder",
            "type": "string",
            "default": settings.durations,
        }
    for toggle, kind in SERVICE_TOGGLES.items():
        inputs[f"enable-{toggle}"] = {
            "description": f"start a {kind} service for the tests (testfleet run --with {kind});"
            " the services in [tool.testfleet] start in any case",
            "type": "boolean",
            "default": kind in settings.kinds,
        }
    return inputs


def reusable(settings: Settings) -> dict[str, Any]:
    """`.github/workflows/testfleet.yml`: the same jobs behind `workflow_call` inputs. A
    generic one (`settings.generic`) belongs to no project: its callers name their folder,
    durations file and services."""
    settings = _checked(settings)
    call: dict[str, Any] = {"inputs": _inputs(settings)}
    secrets = steps.secrets_of(settings)
    if secrets:
        call["secrets"] = secrets
    if settings.generic:
        durations, reports = (
            GENERIC_DURATIONS,
            tuple(
                f"{GENERIC_PROJECT}/{path}"
                for path in (*GENERIC_REPORTS, "${{ inputs.durations-file }}")
            ),
        )
        shards_dir = f"{GENERIC_PROJECT}/{SHARDS_DIR}"
        key_files = (
            "format('{0}/pyproject.toml', inputs.working-directory),"
            " format('{0}/uv.lock', inputs.working-directory)"
        )
        workdir: str | None = GENERIC_PROJECT
    else:
        durations = settings.in_repository(settings.durations)
        reports = settings.report_files
        shards_dir = settings.in_repository(SHARDS_DIR)
        key_files = _quoted_list(settings.key_files)
        workdir = None if settings.placement.at_root else settings.placement.project.as_posix()

    def job(name: str, *, services: bool = False) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "name": name,
            "runs-on": RUNS_ON_INPUT,
            "timeout-minutes": "${{ inputs.timeout-minutes }}",
            "permissions": dict(READ),
        }
        if services:
            spec["env"] = {"TESTFLEET_WITH": "${{ needs.prepare.outputs.with }}"}
        if workdir is not None:
            spec["defaults"] = {"run": {"working-directory": workdir}}
        return spec

    prepare: dict[str, Any] = {
        "name": "prepare (shards, durations)",
        "runs-on": RUNS_ON_INPUT,
        "timeout-minutes": PREPARE_MINUTES,
        "permissions": dict(READ),
        "outputs": {
            "shards": "${{ steps.count.outputs.list }}",
            "with": "${{ steps.services.outputs.with }}",
            "durations-dir": "${{ steps.durations.outputs.dir }}",
        },
        "steps": [
            {
                "name": "Count the shards",
                "id": "count",
                "env": {"SHARDS": "${{ inputs.shards }}"},
                "run": SHARD_LIST,
            },
            {
                "name": "Choose the services to add",
                "id": "services",
                "env": {
                    f"ENABLE_{toggle.upper()}": f"${{{{ inputs.enable-{toggle} }}}}"
                    for toggle in SERVICE_TOGGLES
                },
                "run": SERVICES.format(toggles=_toggle_lines()),
            },
            steps.checkout(sparse=durations),
            *steps.restore_durations(durations),
        ],
    }
    env = {
        "SHARD": "${{ matrix.shard }}",
        "SHARDS": "${{ inputs.shards }}",
        "PYTHON": "${{ matrix.python }}",
        "PYTEST_ARGS": "${{ inputs.pytest-args }}",
        "PER_TEST_TIMEOUT": "${{ inputs.per-test-timeout-seconds }}",
        **steps.credentials(settings),
    }
    if settings.generic:
        env["TESTFLEET_DURATIONS"] = "${{ inputs.durations-file }}"
    run = {"name": "Run this shard", "env": env, "run": REUSABLE_RUN}
    test = job(
        "tests (py${{ matrix.python }}, shard ${{ matrix.shard }}/${{ inputs.shards }})",
        services=True,
    )
    test["needs"] = "prepare"
    test["strategy"] = {
        "fail-fast": False,
        "matrix": {
            "python": "${{ fromJSON(inputs.python-versions) }}",
            "shard": "${{ fromJSON(needs.prepare.outputs.shards) }}",
        },
    }
    spec = "${{ inputs.testfleet-spec }}"
    test["steps"] = [
        steps.checkout(),
        steps.setup_python("${{ matrix.python }}"),
        steps.setup_uv(),
        steps.cache(key_files),
        steps.install(settings, spec),
        steps.download_durations("${{ needs.prepare.outputs.durations-dir }}"),
        run,
        steps.upload(
            "Upload the shard's results", steps.SHARD_ARTIFACT, shards_dir + "/", always=True
        ),
    ]
    merge = job("merge shards", services=True)
    merge["needs"] = ["prepare", "test"]
    merge["if"] = "${{ !cancelled() && needs.prepare.result == 'success' }}"
    merge_run: dict[str, Any] = {"name": "Merge the shards", "run": "testfleet merge\n"}
    if settings.generic:
        merge_run["env"] = {"TESTFLEET_DURATIONS": "${{ inputs.durations-file }}"}
    merge["steps"] = [
        steps.checkout(),
        steps.setup_python("${{ fromJSON(inputs.python-versions)[0] }}"),
        steps.setup_uv(),
        steps.install(settings, spec),
        steps.download_durations("${{ needs.prepare.outputs.durations-dir }}"),
        steps.download_shards(shards_dir),
        merge_run,
        steps.upload(
            "Upload the merged reports",
            steps.REPORT_ARTIFACT,
            "\n".join(reports) + "\n",
            always=True,
        ),
        steps.save_durations(durations),
    ]
    jobs: dict[str, Any] = {"prepare": prepare, "test": test, "merge": merge}
    if not settings.generic:
        jobs.update(_tool_jobs(settings, "${{ fromJSON(inputs.python-versions)[0] }}", job))
    return {
        "name": "testfleet",
        "on": {"workflow_call": call},
        "permissions": {},
        "defaults": {"run": {"shell": "bash"}},
        "jobs": jobs,
    }


def caller(settings: Settings, uses: str, workflow_file: str | None = None) -> dict[str, Any]:
    """A workflow that calls the reusable one with every input spelled out, and passes only
    the secrets it declares (never `secrets: inherit`)."""
    given: dict[str, Any] = {
        "python-versions": json.dumps(list(settings.pythons)),
        "shards": settings.shards,
        "runs-on": _runs_on_input(settings.runs_on),
        "timeout-minutes": settings.timeout_minutes,
    }
    if settings.pytest_args is not None:
        given["pytest-args"] = settings.pytest_args
    if settings.test_timeout is not None:
        timeout = settings.test_timeout
        given["per-test-timeout-seconds"] = int(timeout) if timeout == int(timeout) else timeout
    for toggle, kind in SERVICE_TOGGLES.items():
        given[f"enable-{toggle}"] = kind in settings.kinds
    call: dict[str, Any] = {
        "name": "tests",
        "uses": uses,
        "permissions": dict(READ),
        "with": given,
    }
    secrets = {name: f"${{{{ secrets.{name} }}}}" for name in settings.credential_variables()}
    if secrets:
        call["secrets"] = secrets
    return {
        "name": "tests",
        "on": triggers(settings, workflow_file),
        "permissions": {},
        # The concurrency group lives here, not in the reusable workflow: a called workflow
        # sharing its caller's group would cancel itself.
        "concurrency": dict(CONCURRENCY),
        "jobs": {"tests": call},
    }
