"""Placeholders: `{name}` and `{service.field}` filled in; `{{`/`}}` stay literal braces."""

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from testfleet.envvars import placeholder_environ
from testfleet.errors import ConfigError
from testfleet.placeholders import check_syntax, expand, references, variable


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


# -- shell strings: references to environment variables, never values ----------------------

# Values that are shell syntax in every context: quotes, backticks, $(...), ${IFS}, newlines,
# a backslash, a leading '-', a glob, and nothing at all.
HOSTILE = [
    "/tmp/a b;touch${IFS}x;'\"$(touch y)`touch z`\\ \n#end",
    "hd$(touch PWNED)x",
    "shc;touch${IFS}PWNED;x",
    "'; touch PWNED; '",
    '"; touch PWNED; "',
    "`touch PWNED`",
    "-n",
    "*",
    "a\nEOF\ntouch PWNED\nEOF",
    "end\\",
    "",
]
# /bin/sh is what testfleet runs; bash too, as /bin/sh is bash on some systems.
SHELLS = sorted({os.path.realpath(s) for s in ("/bin/sh", shutil.which("bash")) if s})


def run_sh(shell: str, command: str, cwd: Path, values: Mapping[str, str]) -> str:
    """`command` run as testfleet runs it: the shell, and the placeholders' variables set."""
    env = {"PATH": os.environ["PATH"], **placeholder_environ(values)}
    result = subprocess.run(
        [shell, "-c", command], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout


def test_variable_names():
    """A placeholder's variable: TESTFLEET_ and its name in capitals, '.' and '-' as '_'."""
    assert variable("project_dir") == "TESTFLEET_PROJECT_DIR"
    assert variable("postgres.url") == "TESTFLEET_POSTGRES_URL"
    assert variable("my-api.port") == "TESTFLEET_MY_API_PORT"


def test_placeholder_environ_holds_raw_values():
    """Every value as it is, under its variable's name."""
    assert placeholder_environ({"port": "80", "postgres.url": "postgresql://u:p@h/d"}) == {
        "TESTFLEET_PORT": "80",
        "TESTFLEET_POSTGRES_URL": "postgresql://u:p@h/d",
    }


def test_placeholder_environ_refuses_two_names_for_one_variable():
    """Services `my-api` and `my_api` would share a variable: a one-line error naming both."""
    with pytest.raises(ConfigError, match=r"\{my-api\.url\} and \{my_api\.url\}.*rename"):
        placeholder_environ({"my-api.url": "a", "my_api.url": "b"})


def test_shell_string_holds_references_not_values():
    """Only references are written: the template's own text, `&&` and `{{ }}` braces stay."""
    command = expand("cd {dir} && echo {{x}} {port}", {"dir": "a b", "port": "80"}, shell=True)
    assert command == 'cd "${TESTFLEET_DIR?}" && echo {x} "${TESTFLEET_PORT?}"'


# Each prints the value on a line of its own (with text around it where the template has it).
CONTEXTS = [
    ("printf '%s\\n' {v}", "{v}"),
    ('printf "%s\\n" "{v}"', "{v}"),
    ("printf '%s\\n' x{v}y\"{v}\"", "x{v}y{v}"),
    ("printf '%s\\n' \"$(printf %s {v})\"", "{v}"),
    ('printf "%s\\n" "$(printf %s "{v}")"', "{v}"),
    ("printf '%s\\n' \"`printf %s {v}`\"", "{v}"),
    ("(printf '%s\\n' {v})", "{v}"),
    ("printf '%s\\n' \"it's\" {v} # a comment {v} '", "it's\n{v}"),
    ("sh -c 'printf \"%s\\n\" {v}'", "{v}"),
    ('sh -c \'printf "%s\\n" "<{v}>"\'', "<{v}>"),
    ("sh -c 'sh -c '\\''printf \"%s\\n\" {v}'\\'", "{v}"),
    ('sh -c \'printf "%s\\n" "$1"\' sh {v}', "{v}"),
    ("eval 'printf \"%s\\n\" {v}'", "{v}"),
    ("trap 'printf \"%s\\n\" {v}' EXIT", "{v}"),
    ("sh <<'EOF'\nprintf '%s\\n' {v}\nEOF", "{v}"),
    ('sh <<"EOF"\nprintf \'%s\\n\' "{v}"\nEOF', "{v}"),
    ("cat <<EOF\n{v}\nEOF", "{v}"),
    ("cat <<-EOF\n\t<{v}>\n\tEOF", "<{v}>"),
    ("cat <<EOF; cat <<'EOF' | sh\n{v}\nEOF\nprintf '%s\\n' {v}\nEOF", "{v}\n{v}"),
    ("printf '%s\\n' \"$(cat <<EOF\n{v}\nEOF\n)\"", "{v}"),
    ("printf '%s\\n' <<<{v} {v}", "{v}"),
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("template", "printed"), CONTEXTS)
@pytest.mark.parametrize("value", HOSTILE)
def test_shell_value_arrives_intact_and_runs_nothing(
    shell: str, template: str, printed: str, value: str, tmp_path: Path
):
    """Bare, quoted, in $(...) or backticks, in a nested `sh -c '...'`, eval or trap, in a
    here-document: the command sees the value as it is, and nothing in it runs."""
    if "<<<" in template and not shell.endswith("bash"):
        pytest.skip("here-strings are bash's")
    command = expand(template, {"v": value}, shell=True)
    if value:
        assert value not in command.replace("{v}", "")
    # $(...) drops trailing newlines, as it would from any value.
    expected = printed.replace("{v}", value) + "\n"
    if "$(" in template or "`" in template:
        expected = printed.replace("{v}", value.rstrip("\n")) + "\n"
    assert run_sh(shell, command, tmp_path, {"v": value}) == expected
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_number_in_arithmetic(shell: str, tmp_path: Path):
    """`$(({port} + 1))` works: a number is all arithmetic can be given."""
    command = expand(
        "echo $(({port} + 1)) $(( ({lane}) * 2 ))", {"port": "80", "lane": "3"}, shell=True
    )
    assert run_sh(shell, command, tmp_path, {"port": "80", "lane": "3"}) == "81 6\n"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ('sh -c "cd {v} && ls"', "expanded into code that sh -c runs"),
        ("bash -lc \"cd '{v}'\"", "expanded into code that bash -c runs"),
        ("timeout 5 sh -ec 'cd '{v}", "expanded into code that sh -c runs"),
        ("sh -c {v}", "expanded into code that sh -c runs"),
        ('sh -c -- "cd {v}"', "expanded into code that sh -c runs"),
        ('"$SHELL" -c "cd {v}"', "expanded into code that $SHELL -c runs"),
        ('su nobody -c "ls {v}"', "expanded into code that su -c runs"),
        ('sh -c "$(printf %s {v})"', "expanded into code that sh -c runs"),
        ("sh -c 'sh -c \"cd {v}\"'", "expanded into code that sh -c runs"),
        ('eval "cd {v}"', "expanded into code that eval runs"),
        ("eval cd {v}", "expanded into code that eval runs"),
        ('trap "rm {v}" EXIT', "expanded into code that trap runs"),
        ("sh <<EOF\ncd {v}\nEOF", "a here-document a shell may read"),
        ("cat <<EOF | bash\n{v}\nEOF", "a here-document a shell may read"),
        ("cat <<{v}\nx\n{v}\n", "a here-document's delimiter"),
        ("cd '{v}'", '{v} in single quotes stays the text "${TESTFLEET_V?}"'),
        ("printf '%s\\n' 'dir: {v}/x'", "write {v} outside the quotes ('text '{v}' text')"),
        ("python -c 'print(\"{v}\")'", "{v} in single quotes"),
        ("ssh host 'cd {v}'", "{v} in single quotes"),
        ("cat <<'EOF' > app.ini\ndir={v}\nEOF", "{v} in a quoted here-document"),
        ("echo \\{v}", "a backslash right before {v}"),
        ('echo "\\{v}"', "a backslash right before {v}"),
        ("echo ${v}", "'$' right before {v}"),
        ('echo "${v}"', "'$' right before {v}"),
    ],
)
def test_shell_places_where_a_value_would_be_code(template: str, problem: str):
    """Where the value would become code of a shell (sh -c "...", eval, trap, a here-document
    a shell reads) or the reference would not stand as written, the config is refused, at
    check and at expand, in one line that names the fix."""
    with pytest.raises(ConfigError, match=re.escape(problem)) as info:
        check_syntax(template, where="command", shell=True)
    assert "\n" not in info.value.message
    assert info.value.message.startswith("command: ")
    with pytest.raises(ConfigError, match=re.escape(problem)):
        expand(template, {"v": "x"}, where="command", shell=True)


def test_arithmetic_refuses_a_value_that_is_not_a_number():
    """In $((...)) a value is evaluated (bash runs `a[$(cmd)]` there): only numbers go in."""
    check_syntax("echo $(({v} + 1))", where="command", shell=True)
    assert expand("echo $(({v} + 1))", {"v": "-2"}, shell=True) == "echo $((${TESTFLEET_V?} + 1))"
    with pytest.raises(ConfigError, match=r"^command: \{v\} inside \$\(\(...\)\) .* not a number"):
        expand("echo $(({v} + 1))", {"v": "a[$(touch x)]"}, where="command", shell=True)


def test_shell_escaped_dollar_and_pid_are_fine():
    """`\\$` is a literal dollar and `$$` the shell's pid: a placeholder may follow either."""
    command = expand("echo \\${v} $${v}", {"v": "1"}, shell=True)
    assert command == 'echo \\$"${TESTFLEET_V?}" $$"${TESTFLEET_V?}"'


def test_unset_variable_stops_the_shell(tmp_path: Path):
    """A reference whose variable a nested command dropped (`env -i`, sudo) stops the shell
    with the variable's name, instead of standing for an empty path."""
    command = expand("env -i sh -c 'rm -rf {v}/cache'", {"v": "x"}, shell=True)
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        env={"PATH": os.environ["PATH"], **placeholder_environ({"v": "x"})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "TESTFLEET_V" in result.stderr


def test_argv_values_are_not_quoted():
    """Without shell, a value goes in as it is: an argv part is one argument already."""
    assert expand("--dir={dir}", {"dir": "a b;c"}) == "--dir=a b;c"
