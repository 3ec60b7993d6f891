"""The steps the GitHub workflows are made of, shared by the plain and the reusable workflow.

Values that come from a caller (the reusable workflow's inputs) reach `run:` scripts as env
vars, never pasted into the script: an input is text and must not become shell code. Paths
are written as seen from the repository's root, where every job starts.
"""

from __future__ import annotations

from typing import Any

from testfleet.ci import actions
from testfleet.ci.model import Settings, index_variable

SHARD_ARTIFACT = "shard-py${{ matrix.python }}-${{ matrix.shard }}"
DURATIONS_ARTIFACT = "durations"
REPORT_ARTIFACT = "testfleet-report"
CACHE_KEY = "testfleet-${{ runner.os }}-py${{ matrix.python }}-"
# The branch a run belongs to: a pull request's head branch, else the pushed branch. Caches
# written on it are read back by its next runs; a new branch falls back to the default one.
BRANCH = "${{ github.head_ref || github.ref_name }}"
DURATIONS_KEY = "testfleet-durations-"
RUN = "${{ github.run_id }}-${{ github.run_attempt }}"  # a cache key is written once
# Kept for a week: long enough to look at a failure, short enough not to pile up.
RETENTION_DAYS = 7

ENSURE_DURATIONS = """\
# Every shard must plan from the same file: hand them one even when nothing was measured yet.
mkdir -p "$(dirname "$DURATIONS")"
if [ ! -f "$DURATIONS" ]; then
  printf '{"version": 1, "durations": {}}\\n' > "$DURATIONS"
  echo "no measured durations yet: this run splits by test count and measures them"
fi
{
  echo "file=$DURATIONS"
  echo "dir=$(dirname "$DURATIONS")"
} >> "$GITHUB_OUTPUT"
"""


def credentials(settings: Settings) -> dict[str, str]:
    """Index credentials for the steps that run uv, as references to secrets, never values."""
    return {name: f"${{{{ secrets.{name} }}}}" for name in settings.credential_variables()}


def with_env(step: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return {**step, "env": {**step.get("env", {}), **env}} if env else step


def checkout(sparse: str | None = None) -> dict[str, Any]:
    # The token is not left in .git/config: no step after this one needs to push.
    step: dict[str, Any] = {
        "name": "Check out",
        "uses": actions.CHECKOUT.uses(),
        "with": {"persist-credentials": False},
    }
    if sparse is not None:
        step["with"].update({"sparse-checkout": sparse, "sparse-checkout-cone-mode": False})
    return step


def setup_python(version: str) -> dict[str, Any]:
    return {
        "name": "Set up Python",
        "uses": actions.SETUP_PYTHON.uses(),
        "with": {"python-version": version},
    }


def setup_uv() -> dict[str, Any]:
    # setup-uv's own cache is off so that one cache step keeps uv's cache and testfleet's
    # together, in uv's usual place. testfleet is installed into the job's temp directory:
    # on a self-hosted runner that keeps its home between jobs, two jobs never share it.
    return {
        "name": "Set up uv",
        "uses": actions.SETUP_UV.uses(),
        "with": {
            "enable-cache": False,
            "cache-local-path": "~/.cache/uv",
            "tool-dir": "${{ runner.temp }}/uv-tools",
            "tool-bin-dir": "${{ runner.temp }}/uv-tools/bin",
        },
    }


def cache(key_files: str) -> dict[str, Any]:
    """uv's cache and testfleet's initdb cache; `key_files`: hashFiles' arguments."""
    return {
        "name": "Cache uv's downloads and testfleet's initdb results",
        "uses": actions.CACHE.uses(),
        "with": {
            "path": "~/.cache/uv\n~/.cache/testfleet\n",
            "key": CACHE_KEY + "${{ hashFiles(" + key_files + ") }}",
            "restore-keys": CACHE_KEY,
        },
    }


def install(settings: Settings, spec: str) -> dict[str, Any]:
    """`uv tool install` of the pinned spec; `spec` is an expression or the spec itself,
    handed to the script as an env var."""
    return with_env(
        {"name": "Install testfleet", "env": {"SPEC": spec}, "run": 'uv tool install "$SPEC"\n'},
        credentials(settings),
    )


def restore_durations(path: str) -> list[dict[str, Any]]:
    """The last merged durations of this branch (else the default branch's) over the
    committed file, and a file in any case; `path` from the repository's root (may be an
    expression). Outputs `file` and `dir` of step `durations`."""
    return [
        {
            "name": "Restore the durations measured by the last run",
            "uses": actions.CACHE_RESTORE.uses(),
            "with": {
                "path": path,
                "key": f"{DURATIONS_KEY}{BRANCH}-${{{{ github.run_id }}}}",
                "restore-keys": (
                    f"{DURATIONS_KEY}{BRANCH}-\n"
                    f"{DURATIONS_KEY}${{{{ github.event.repository.default_branch }}}}-\n"
                ),
            },
        },
        {
            "name": "Hand every shard the same durations",
            "id": "durations",
            "env": {"DURATIONS": path},
            "run": ENSURE_DURATIONS,
        },
        upload("Upload the durations", DURATIONS_ARTIFACT, "${{ steps.durations.outputs.file }}"),
    ]


def download_durations(directory: str) -> dict[str, Any]:
    return {
        "name": "Download the durations every shard plans from",
        "uses": actions.DOWNLOAD.uses(),
        "with": {"name": DURATIONS_ARTIFACT, "path": directory},
    }


def save_durations(path: str) -> dict[str, Any]:
    # Saved after a merge that wrote them, also when tests failed: their times are still right.
    return {
        "name": "Keep the merged durations for the next run",
        "if": f"${{{{ !cancelled() && hashFiles('{path}') != '' }}}}"
        if "${{" not in path
        else "${{ !cancelled() }}",
        "uses": actions.CACHE_SAVE.uses(),
        "with": {
            "path": path,
            "key": f"{DURATIONS_KEY}{BRANCH}-{RUN}",
        },
    }


def upload(name: str, artifact: str, path: str, *, always: bool = False) -> dict[str, Any]:
    """upload-artifact that a re-run can repeat: `overwrite` replaces the first attempt's
    artifact instead of failing on its name (and a re-run merge reads the new one).
    `always`: also after a failed step (not after a cancel), so failures hand in results."""
    step: dict[str, Any] = {"name": name}
    if always:
        step["if"] = "${{ !cancelled() }}"
    step["uses"] = actions.UPLOAD.uses()
    step["with"] = {
        "name": artifact,
        "path": path,
        # .testfleet/ starts with a dot, which upload-artifact leaves out by default.
        "include-hidden-files": True,
        "overwrite": True,
        "retention-days": RETENTION_DAYS,
    }
    return step


def download_shards(directory: str) -> dict[str, Any]:
    return {
        "name": "Download every shard's results",
        "uses": actions.DOWNLOAD.uses(),
        "with": {"pattern": "shard-*", "merge-multiple": True, "path": directory},
    }


def secrets_of(settings: Settings) -> dict[str, Any]:
    """The reusable workflow's secrets: the index credentials it may be given."""
    return {
        f"{index_variable(index)}_{part}": {
            "description": f"the {part.lower()} uv sends to the {index} index",
            "required": False,
        }
        for index in settings.indexes
        for part in ("USERNAME", "PASSWORD")
    }
