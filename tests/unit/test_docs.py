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


def test_every_run_option_is_documented_with_its_flag_and_env_var():
    """The reference table cannot fall behind the options the CLI accepts, nor the commands
    that read each one."""
    from testfleet.options import OPTIONS

    reference = (REPO / "docs" / "configuration.md").read_text()
    rows = [line for line in reference.splitlines() if line.startswith("| `")]
    for option in OPTIONS:
        row = next((r for r in rows if r.startswith(f"| `{option.key}` |")), None)
        assert row is not None, f"{option.key} is not in docs/configuration.md"
        assert option.flag in row, option.key
        assert option.env in row, option.key
        read_by = row.split(" | ")[4]
        assert read_by == ", ".join(f"`{c}`" for c in option.commands), option.key


def test_exit_codes_in_the_readme_cover_the_signals_we_handle():
    readme = (REPO / "README.md").read_text()
    assert "| 130 / 143 / 129 |" in readme
