"""`testfleet ci github|gitlab`: write the CI files that run the suite as a matrix of Python
versions x shards (`testfleet run --shard I/M`) and merge the shards (`testfleet merge`).

The generated files call the same commands a developer runs on a laptop; the CI system's own
matrix spreads them over machines. Every file starts with a header naming the command that
regenerates it, and a file without that header is never overwritten unless asked to.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from testfleet.ci.config import DEFAULT_TIMEOUT_MINUTES, MAX_TIMEOUT_MINUTES, runner_labels
from testfleet.ci.files import (
    GITLAB_PIPELINE,
    check_writable,
    render,
    shown,
    write_atomically,
)
from testfleet.ci.model import (
    DEFAULT_RUNNER,
    DEFAULT_SHARD_TARGET,
    DEFAULT_SHARDS,
    INDEX_NAME,
    number,
)
from testfleet.commands import Call
from testfleet.commands.common import project_for
from testfleet.console import say
from testfleet.errors import ConfigError
from testfleet.values import MAX_SHARDS, argument_type, seconds

GITHUB_WORKFLOW = ".github/workflows/tests.yml"
GITHUB_REUSABLE = ".github/workflows/testfleet.yml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`ci github` and `ci gitlab`. Sub-subcommands use the same parser class as `parser`,
    so errors stay one line."""
    parser.description = (
        "Write GitHub Actions or GitLab CI files. Paths are relative to the project."
    )
    systems = parser.add_subparsers(
        dest="ci_system", required=True, metavar="{github,gitlab}", parser_class=type(parser)
    )
    github_parser = systems.add_parser(
        "github",
        help=f"write {GITHUB_WORKFLOW} (with --reusable: {GITHUB_REUSABLE} and a caller)",
    )
    _add_common(github_parser, f"{GITHUB_WORKFLOW}, or {GITHUB_REUSABLE} with --reusable")
    github_parser.add_argument(
        "--reusable",
        dest="ci_reusable",
        action="store_true",
        help="a workflow_call workflow with inputs (python-versions, shards, runs-on,"
        " timeout-minutes, per-test-timeout-seconds, pytest-args, testfleet-spec, enable-*"
        " service toggles) and index secrets, plus a caller",
    )
    github_parser.add_argument(
        "--generic",
        dest="ci_generic",
        action="store_true",
        help="with --reusable: a workflow for any project (no pyproject.toml needed), for one"
        " repository that many call; adds the inputs working-directory and durations-file",
    )
    github_parser.add_argument(
        "--caller",
        dest="ci_caller",
        metavar="PATH",
        help=f"with --reusable: where the caller goes (default: {GITHUB_WORKFLOW})",
    )
    gitlab_parser = systems.add_parser("gitlab", help=f"write {GITLAB_PIPELINE}")
    _add_common(gitlab_parser, GITLAB_PIPELINE)


def main(call: Call) -> int:
    """Write (or print) the CI files; 0 on success, user errors raised as ConfigError."""
    args = call.args
    generic = getattr(args, "ci_generic", False)
    if generic and not args.ci_reusable:
        raise ConfigError("--generic is a kind of reusable workflow; add --reusable")
    cwd = Path(args.project).resolve()
    project = None if generic else project_for(call, "ci")
    files = render(args, project, cwd)
    if args.ci_stdout:
        # Several files print as one YAML stream, a document each.
        sys.stdout.write("---\n".join(text for _, text in files))
        sys.stdout.flush()
        return 0
    for path, _ in files:  # check every file before writing any
        check_writable(path, args.ci_force)
    for path, text in files:
        write_atomically(path, text)
        say(f"wrote {shown(path, cwd)}")
    if generic:
        say(
            "call it from a project's workflow with `uses: OWNER/REPO/"
            f"{shown(files[0][0], files[0][0].parents[2])}@COMMIT` (see docs/ci.md)"
        )
    return 0


def _shards(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f'must be a whole number of shards from 1 to {MAX_SHARDS}, or "auto"')
    return count


def _versions(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(","))
    if not all(parts) or len(set(parts)) != len(parts):
        raise ValueError(
            "must be Python versions separated by commas, each once, such as 3.11,3.12"
        )
    return parts


def _one_line(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if "\n" in text or "\r" in text:
            raise ValueError(f"{what} must be one line")
        return text

    return parse


def _minutes(text: str) -> int:
    try:
        minutes = int(text)
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= MAX_TIMEOUT_MINUTES:
        raise ValueError(f"must be a whole number of minutes from 1 to {MAX_TIMEOUT_MINUTES}")
    return minutes


def _branch(text: str) -> str:
    if not text or any(char in text for char in " ~^:?*[\\\n\r") or "${{" in text:
        raise ValueError("must be a branch name")
    return text


def _pytest_args(text: str) -> str:
    _one_line("pytest arguments")(text)
    try:
        shlex.split(text)
    except ValueError as exc:  # "No closing quotation"
        raise ValueError(f"must be shell-quoted arguments ({exc})") from None
    return text


def _index(text: str) -> str:
    if not INDEX_NAME.fullmatch(text):
        raise ValueError(
            "an index name uses letters, digits, '.', '_' and '-', as in [[tool.uv.index]]"
            " name = ...; pass the name, not its URL"
        )
    return text


def _add_common(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument(
        "-o",
        "--output",
        dest="ci_output",
        metavar="PATH",
        help=f"the file to write, relative to the project (default: {default_output})",
    )
    parser.add_argument(
        "--stdout", dest="ci_stdout", action="store_true", help="print instead of writing files"
    )
    parser.add_argument(
        "--force",
        dest="ci_force",
        action="store_true",
        help="overwrite a file that `testfleet ci` did not write",
    )
    parser.add_argument(
        "--python",
        dest="ci_python",
        metavar="VERSIONS",
        type=argument_type(_versions),
        help="Python versions of the matrix, such as 3.11,3.12,3.13 (default: python in"
        " [tool.testfleet] when it lists versions, else the running interpreter's)",
    )
    parser.add_argument(
        "--shards",
        dest="ci_shards",
        metavar="N|auto",
        type=argument_type(_shards),
        default=DEFAULT_SHARDS,
        help="machines per Python version; 'auto': enough to keep each under --shard-target"
        f" seconds by measured durations (default: {DEFAULT_SHARDS})",
    )
    parser.add_argument(
        "--shard-target",
        dest="ci_shard_target",
        metavar="SECONDS",
        type=argument_type(seconds),
        help=f"with --shards auto: the most test time a shard should get (default:"
        f" {number(DEFAULT_SHARD_TARGET)})",
    )
    parser.add_argument(
        "--pytest-args",
        dest="ci_pytest_args",
        metavar="ARGS",
        type=argument_type(_pytest_args),
        help="pass --pytest-args ARGS to every `testfleet run` (one shell-quoted string)",
    )
    parser.add_argument(
        "--test-timeout",
        dest="ci_test_timeout",
        metavar="SECONDS",
        type=argument_type(seconds),
        help="pass --test-timeout SECONDS to every `testfleet run`",
    )
    parser.add_argument(
        "--index",
        dest="ci_index",
        metavar="NAME",
        action="append",
        type=argument_type(_index),
        default=[],
        help="a private package index uv needs (repeatable): its credentials come from the"
        " secrets UV_INDEX_<NAME>_USERNAME and UV_INDEX_<NAME>_PASSWORD",
    )
    parser.add_argument(
        "--testfleet-spec",
        dest="ci_spec",
        metavar="SPEC",
        type=argument_type(_one_line("the spec")),
        help="what `uv tool install` installs in CI (default: testfleet-spec in"
        " [tool.testfleet.ci], else this testfleet pinned: its version from an index, or its"
        " Git repository at the installed commit)",
    )
    parser.add_argument(
        "--runs-on",
        dest="ci_runs_on",
        metavar="LABELS",
        type=argument_type(runner_labels),
        help="runner labels (GitHub) or tags (GitLab) of every job, such as"
        f" self-hosted,linux,X64 (default: runs-on in [tool.testfleet.ci], else"
        f" {','.join(DEFAULT_RUNNER)} on GitHub and no tags on GitLab)",
    )
    parser.add_argument(
        "--timeout-minutes",
        dest="ci_timeout_minutes",
        metavar="N",
        type=argument_type(_minutes),
        help="stop a job that runs longer (default: timeout-minutes in [tool.testfleet.ci],"
        f" else {DEFAULT_TIMEOUT_MINUTES})",
    )
    parser.add_argument(
        "--default-branch",
        dest="ci_default_branch",
        metavar="NAME",
        type=argument_type(_branch),
        help="the branch whose pushes are tested and whose durations new branches start"
        " from (default: origin's HEAD, else a local main or master)",
    )
