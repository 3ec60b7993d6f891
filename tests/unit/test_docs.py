"""The README's promises stay true: .ci/run runs the README's own test command."""

import re

from tests.helpers import REPO


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_quick_start_is_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "testfleet -C examples/bookshop run" in commands[0]
    assert commands[1].endswith("pytest")


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    match = re.search(r'TEST_COMMAND="(.*)"', ci)
    assert match is not None
    assert match.group(1) == quick_start_commands()[1]
