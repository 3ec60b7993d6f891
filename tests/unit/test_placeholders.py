"""Placeholders: `{name}` and `{service.field}` filled in; `{{`/`}}` stay literal braces."""

import re
import subprocess
from pathlib import Path

import pytest

from testfleet.errors import ConfigError
from testfleet.placeholders import check_syntax, expand, references


def test_references_in_order():
    assert references("{postgres.url} and {port} but {{not}}") == ["postgres.url", "port"]


def test_expand_fills_values():
    assert expand("http://{host}:{port}/", {"host": "h", "port": "1"}) == "http://h:1/"


def test_double_braces_are_literal():
    assert expand('{{"lane": {lane}}}', {"lane": "2"}) == '{"lane": 2}'


def test_missing_value_names_where():
    with pytest.raises(ConfigError, match=r"^env\.X: placeholder \{nope\} has no value here$"):
        expand("{nope}", {}, where="env.X")


# -- brace syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{lane", "unclosed '{' in '{lane'; close the placeholder as {lane}"),
        ("--x={postgres.url", "close the placeholder as {postgres.url}"),
        ("{host:{port}", "close the placeholder as {host}"),
        ("a } b", "a lone '}'"),
        ("{{lane}", "a lone '}'"),
        ("{1}", "'{1}' is not a placeholder"),
        ('{"a": 1}', "'{\"a\": 1}' is not a placeholder"),
    ],
)
def test_check_syntax_refuses_unmatched_braces(template: str, problem: str):
    """A brace that is neither a placeholder nor doubled is an error naming where, with `{{`."""
    with pytest.raises(ConfigError) as info:
        check_syntax(template, where="env.X")
    assert info.value.message.startswith("env.X: ")
    assert problem in info.value.message
    assert "{{" in info.value.message or "}}" in info.value.message


@pytest.mark.parametrize("template", ["plain", "{lane}", "{{}}", '{{"a": {lane}}}', "}}{{"])
def test_check_syntax_accepts_placeholders_and_doubled_braces(template: str):
    """Placeholders and `{{`/`}}` pass."""
    check_syntax(template, where="env.X")


# -- shell quoting -------------------------------------------------------------------------

NASTY = "/tmp/a b;touch${IFS}x;'\"$(touch y)`touch z`\\ \n#end"


def run_sh(command: str, cwd: Path) -> str:
    result = subprocess.run(
        ["/bin/sh", "-c", command], cwd=cwd, capture_output=True, text=True, check=True
    )
    return result.stdout


def test_shell_value_stays_one_argument_and_runs_nothing(tmp_path: Path):
    """A project path with a space and `;touch${IFS}x;` arrives intact and creates no file."""
    value = "/tmp/a b;touch${IFS}x;"
    command = expand("printf '%s\\n' {project_dir}", {"project_dir": value}, shell=True)
    assert run_sh(command, tmp_path) == value + "\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "template",
    [
        "printf '%s\\n' {v}",
        "printf '%s\\n' '{v}'",
        'printf "%s\\n" "{v}"',
        "printf '%s\\n' \"$(printf %s {v})\"",
        'printf "%s\\n" "$(printf %s "{v}")"',
        "printf '%s\\n' \"it's\" {v} # a comment {v}",
        "(printf '%s\\n' {v})",
    ],
)
def test_shell_quoting_follows_the_templates_own_quotes(template: str, tmp_path: Path):
    """Bare, in '...', in "...", inside $(...): the value arrives intact and runs nothing."""
    out = run_sh(expand(template, {"v": NASTY}, shell=True), tmp_path)
    assert out.endswith(NASTY + "\n")
    assert list(tmp_path.iterdir()) == []


def test_shell_quoting_leaves_literal_text_alone():
    """Only values are quoted: the template's own text, `&&` and `{{ }}` braces stay."""
    command = expand("cd {dir} && echo {{x}} {port}", {"dir": "a b", "port": "80"}, shell=True)
    assert command == "cd 'a b' && echo {x} 80"


def test_argv_values_are_not_quoted():
    """Without shell, a value goes in as it is: an argv part is one argument already."""
    assert expand("--dir={dir}", {"dir": "a b;c"}) == "--dir=a b;c"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("echo `cat {v}`", "is inside backticks"),
        ("echo \\{v}", "a backslash right before {v}"),
        ("echo ${v}", "'$' right before {v}"),
        ('echo "${v}"', "'$' right before {v}"),
    ],
)
def test_shell_places_no_quoting_can_make_safe(template: str, problem: str):
    """Backticks, a backslash or `$` before a placeholder are refused, at check and expand."""
    with pytest.raises(ConfigError, match=re.escape(problem)):
        check_syntax(template, where="command", shell=True)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        expand(template, {"v": "x"}, where="command", shell=True)


def test_shell_escaped_dollar_and_pid_are_fine():
    """`\\$` is a literal dollar and `$$` the shell's pid: a value may follow either."""
    assert expand("echo \\${v} $${v}", {"v": "1"}, shell=True) == "echo \\$1 $$1"
