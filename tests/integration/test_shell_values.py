"""Placeholder values in the shell strings testfleet runs are data in every context a command
puts them in (bare, in a here-document, in a nested `sh -c '...'`): a project directory whose
name is shell syntax runs nothing, and the command still sees the directory's real path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from testfleet.rundir import PIDS_NAME
from testfleet.runtime import Run
from testfleet.stack import Stack, resolve_binaries
from tests.helpers import alive, project, recorded_pids

pytestmark = pytest.mark.integration

# Project directory names that are shell syntax. The first two are the attacks.
HOSTILE = [
    "hd$(touch PWNED)x",
    "shc;touch${IFS}PWNED;x",
    "q'uo\"te`touch PWNED`x",
    "nl\ntouch PWNED\n#x",
    "-dash $(touch${IFS}PWNED) *",
    "end\\",
]

# Each line writes the value it sees to a file of its own, so the test can compare them.
SCRIPT = """\
cat > seen-heredoc <<EOF
{project_dir}
EOF
sh <<'EOF'
printf '%s' {project_dir} > seen-quoted-heredoc
EOF
sh -c 'cd {project_dir} && printf "%s" "$PWD" > seen-sh-c'
sh -c 'printf "%s" "{project_dir}" > seen-sh-c-double'
printf '%s' {project_dir} > seen-bare
printf '%s' "{project_dir}" > seen-double
printf '%s' "$(printf '%s' {project_dir})" > seen-substitution
printf '%s' "$TESTFLEET_PROJECT_DIR" > seen-env
"""
SEEN = [
    "seen-heredoc",
    "seen-quoted-heredoc",
    "seen-sh-c",
    "seen-sh-c-double",
    "seen-bare",
    "seen-double",
    "seen-substitution",
    "seen-env",
]


@pytest.fixture
def start(own_run_base: Path) -> Iterator[Callable[[Path, dict[str, Any]], Stack]]:
    """Start a stack rooted in a given project directory, under the test's own run base;
    teardown checks that no process and no run directory is left."""
    runs: list[Run] = []
    with ExitStack() as exits:

        def make(root: Path, table: dict[str, Any]) -> Stack:
            loaded = project(root, table)
            run = exits.enter_context(Run(own_run_base))
            runs.append(run)
            stack = Stack(loaded, run, resolve_binaries(loaded), lanes=1)
            exits.callback(stack.stop)
            stack.start()
            return stack

        yield make
        pids = [
            pid
            for run in runs
            if (run.run_dir.path / PIDS_NAME).exists()
            for pid in recorded_pids(run.run_dir.path)
        ]
    assert not [run for run in runs if run.run_dir.path.exists()], "run directory left behind"
    assert alive(pids) == [], "processes left running"


def hostile_root(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name / "project"
    root.mkdir(parents=True)
    return root.resolve()


def assert_saw(tmp_path: Path, root: Path, files: list[str]) -> None:
    """Each file holds the project's path (a missing file is None), and nothing ran `touch`."""
    expected = {name: str(root) + ("\n" if name == "seen-heredoc" else "") for name in files}
    seen = {name: (root / name).read_text() if (root / name).exists() else None for name in files}
    planted = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("PWNED")]
    assert (planted, seen) == ([], expected)


@pytest.mark.parametrize("name", HOSTILE)
def test_command_service_sees_the_path_and_runs_nothing(start, tmp_path: Path, name: str):
    """A command service's command and ready check see the project's path in every context,
    and no command planted in the directory's name runs."""
    root = hostile_root(tmp_path, name)
    start(
        root,
        {
            "services": {
                "app": {
                    "kind": "command",
                    "command": SCRIPT + "touch done\nexec sleep 600\n",
                    # Ready once the script is through; it sees the path too.
                    "ready": {
                        "command": "test -e done && sh -c 'printf %s {project_dir} > seen-ready'"
                    },
                }
            }
        },
    ).provision(1)
    assert_saw(tmp_path, root, [*SEEN, "seen-ready"])


@pytest.mark.parametrize("name", HOSTILE[:2])
def test_postgres_setup_sees_the_path_and_runs_nothing(start, tmp_path: Path, name: str):
    """PostgreSQL's setup command sees the project's path in every context and runs nothing
    planted in it."""
    root = hostile_root(tmp_path, name)
    start(root, {"services": {"postgres": {"setup": SCRIPT}}})
    assert_saw(tmp_path, root, SEEN)
