"""Python matrix venvs: interpreter search, fingerprints, credentials, and the build steps,
against fake interpreters and a fake uv (tiny shell scripts; nothing is downloaded)."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testfleet import credentials, venvs
from testfleet.errors import ConfigError, ServiceError
from testfleet.project import Project, validate
from testfleet.venvs.build import VENVS_DIR
from testfleet.venvs.fingerprint import FINGERPRINT_NAME, fingerprint, is_up_to_date
from testfleet.venvs.interpreters import find_interpreter, probe, running_interpreter
from testfleet.venvs.names import check_names
from testfleet.venvs.uv import UvRunner

RUNNING = f"{sys.version_info[0]}.{sys.version_info[1]}"


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_python(path: Path, version: str, implementation: str = "cpython") -> Path:
    """An "interpreter" that answers testfleet's probe with `version`."""
    return script(path, f"echo {implementation} {version.replace('.', ' ')}\n")


@dataclass
class Machine:
    """A fake machine: pyenv root, system bin dir and PATH entries under tmp_path."""

    root: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def pyenv(self) -> Path:
        return self.root / "pyenv"

    @property
    def system(self) -> Path:
        return self.root / "usr-bin"

    def path(self, *entries: Path) -> None:
        # /usr/bin and /bin stay last: the fake uv script needs mkdir, ln and sleep.
        self.monkeypatch.setenv("PATH", os.pathsep.join([*map(str, entries), "/usr/bin:/bin"]))


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setattr("testfleet.venvs.interpreters.SYSTEM_BIN_DIRS", (tmp_path / "usr-bin",))
    monkeypatch.setattr("testfleet.venvs.uv.find_uv_or_none", lambda: None)
    fake = Machine(tmp_path, monkeypatch)
    fake.path()
    return fake


# -- finding interpreters ----------------------------------------------------------------------


def test_the_newest_pyenv_patch_release_is_found_first(machine: Machine) -> None:
    """Among pyenv's versions of 3.99, the newest patch wins (numerically: 10 > 2)."""
    for patch in ("1", "2", "10"):
        fake_python(
            machine.pyenv / "versions" / f"3.99.{patch}" / "bin" / "python3.99", f"3.99.{patch}"
        )
    found = find_interpreter("3.99")
    assert found == machine.pyenv / "versions" / "3.99.10" / "bin" / "python3.99"


def test_a_patch_version_must_match_exactly(machine: Machine) -> None:
    """ "3.99.2" is that release, not the newest 3.99."""
    for patch in ("2", "10"):
        fake_python(
            machine.pyenv / "versions" / f"3.99.{patch}" / "bin" / "python3.99", f"3.99.{patch}"
        )
    assert find_interpreter("3.99.2").parent.parent.name == "3.99.2"


def test_pyenv_root_is_honoured_and_home_pyenv_is_the_default(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$PYENV_ROOT is searched when set; ~/.pyenv otherwise."""
    home = machine.root / "home"
    fake_python(home / ".pyenv" / "versions" / "3.99.1" / "bin" / "python3.99", "3.99.1")
    fake_python(machine.pyenv / "versions" / "3.99.5" / "bin" / "python3.99", "3.99.5")
    monkeypatch.setenv("HOME", str(home))
    assert "3.99.5" in str(find_interpreter("3.99"))
    monkeypatch.delenv("PYENV_ROOT")
    assert "3.99.1" in str(find_interpreter("3.99"))


def test_shims_and_interpreters_that_do_not_run_are_passed_over(machine: Machine) -> None:
    """A pyenv shim directory is skipped, and a candidate counts only if running it reports the
    version: a shim-like script that fails, or one of another version, is not it."""
    shims = machine.root / "shims"
    fake_python(shims / "python3.99", "3.99.0")
    broken = script(
        machine.root / "broken" / "python3.99", "echo 'pyenv: not found' >&2\nexit 127\n"
    )
    other = fake_python(machine.root / "other" / "python3.99", "3.98.0")
    pypy = fake_python(machine.root / "pypy" / "python3.99", "3.99.0", implementation="pypy")
    good = fake_python(machine.root / "good" / "python3.99", "3.99.0")
    machine.path(shims, broken.parent, other.parent, pypy.parent, good.parent)
    assert find_interpreter("3.99") == good


def test_system_directories_come_before_path(machine: Machine) -> None:
    """/usr/bin (and /usr/local/bin) are searched before PATH entries."""
    system = fake_python(machine.system / "python3.99", "3.99.0")
    on_path = fake_python(machine.root / "bin" / "python3.99", "3.99.0")
    machine.path(on_path.parent)
    assert find_interpreter("3.99") == system


def test_uvs_own_pythons_are_the_last_resort(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When nothing else has the version, a Python uv installed earlier is used (if it runs)."""
    managed = fake_python(
        machine.root / "uv-pythons" / "cpython-3.99.4" / "bin" / "python3.99", "3.99.4"
    )
    uv_binary = script(
        machine.root / "uv",
        f'[ "$1 $2" = "python find" ] && [ "$3" = "--managed-python" ] && echo {managed}\n',
    )
    monkeypatch.setattr("testfleet.venvs.uv.find_uv_or_none", lambda: uv_binary)
    assert find_interpreter("3.99") == managed


def test_the_running_interpreter_comes_first(machine: Machine) -> None:
    """The interpreter running testfleet is used for its own version without a search."""
    fake_python(machine.pyenv / "versions" / "9.9" / "bin" / f"python{RUNNING}", "9.9.9")
    if sys.implementation.name != "cpython":
        pytest.skip("the running interpreter counts only when it is CPython")
    found = find_interpreter(RUNNING)
    assert found == running_interpreter()
    # Not testfleet's own venv (which may move): the interpreter that venv was made from.
    if sys.prefix != sys.base_prefix:
        assert not found.is_relative_to(sys.prefix)
    assert probe(found) == tuple(sys.version_info[:3])


def test_a_missing_version_names_it_what_was_found_and_the_fix(machine: Machine) -> None:
    """The error is one line: the version, the versions found here, how to install it."""
    fake_python(machine.pyenv / "versions" / "3.99.1" / "bin" / "python3.99", "3.99.1")
    with pytest.raises(ConfigError) as caught:
        find_interpreter("3.98")
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith("python 3.98: no CPython 3.98 found on this machine")
    assert "3.99.1" in message
    assert "apt-get install python3.98" in message
    assert "pyenv install 3.98" in message
    assert "drop it from python" in message


# -- fingerprints ------------------------------------------------------------------------------


def _fingerprint(root: Path, **changes: object) -> str:
    arguments: dict[str, object] = {
        "interpreter": Path("/usr/bin/python3.99"),
        "version": "3.99.1",
        "extras": ("test",),
        "groups": ("dev",),
        "uv_version": "uv 0.13.9",
    }
    arguments.update(changes)
    return fingerprint(root, **arguments)  # type: ignore[arg-type]


def test_the_fingerprint_changes_with_what_the_venv_is_built_from(tmp_path: Path) -> None:
    """pyproject, uv.lock, requirements files, extras, groups, interpreter, its version and uv's
    version each change the fingerprint; the same inputs give the same one."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n')
    base = _fingerprint(tmp_path)
    assert _fingerprint(tmp_path) == base
    assert _fingerprint(tmp_path, extras=("test",), groups=("dev",)) == base
    seen = {base}
    for changed in (
        _fingerprint(tmp_path, extras=("test", "docs")),
        _fingerprint(tmp_path, groups=()),
        _fingerprint(tmp_path, interpreter=Path("/opt/python3.99")),
        _fingerprint(tmp_path, version="3.99.2"),
        _fingerprint(tmp_path, uv_version="uv 0.14.0"),
    ):
        assert changed not in seen
        seen.add(changed)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\ndependencies = ["x"]\n')
    edited = _fingerprint(tmp_path)
    assert edited not in seen
    (tmp_path / "uv.lock").write_text("version = 1\n")
    locked = _fingerprint(tmp_path)
    assert locked != edited
    (tmp_path / "requirements-test.txt").write_text("pytest\n")
    assert _fingerprint(tmp_path) != locked


def test_the_order_of_extras_and_groups_does_not_matter(tmp_path: Path) -> None:
    """["a", "b"] and ["b", "a"] install the same things: no rebuild."""
    (tmp_path / "pyproject.toml").write_text("")
    assert _fingerprint(tmp_path, extras=("a", "b")) == _fingerprint(tmp_path, extras=("b", "a"))


def test_a_venv_without_its_fingerprint_is_not_up_to_date(tmp_path: Path) -> None:
    """A build that stopped before its fingerprint was written (last) is rebuilt; so is one
    whose interpreter link is gone."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    assert not is_up_to_date(venv, "abc")
    (venv / FINGERPRINT_NAME).write_text("abc\n")
    assert is_up_to_date(venv, "abc")
    assert not is_up_to_date(venv, "abd")
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to(tmp_path / "gone")
    assert not is_up_to_date(venv, "abc")


# -- credentials -------------------------------------------------------------------------------

CREDENTIALS = {
    "UV_INDEX_PRIVATE_USERNAME": "alice",
    "UV_INDEX_PRIVATE_PASSWORD": "s3cr@t-pw",
    "UV_INDEX_URL": "https://bob:hunter2@pypi.example/simple",
    "UV_EXTRA_INDEX_URL": "https://carol:p%40ss@one.example/simple https://two.example/simple",
    "UV_INDEX": "corp=https://dave:tok@corp.example/simple",
    "PIP_INDEX_URL": "https://erin:pipsecret@pip.example/simple",
    "PIP_EXTRA_INDEX_URL": "https://frank:x1y2z3@more.example/simple",
    "UV_PUBLISH_TOKEN": "pypi-publish-token",
    "HOME": "/home/user",
    "PATH": "/usr/bin",
}


def test_children_get_no_uv_index_credentials() -> None:
    """Lanes and services see the index URLs without their userinfo and none of uv's
    credential variables; everything else passes through unchanged."""
    child = credentials.child_environ(CREDENTIALS)
    assert "UV_INDEX_PRIVATE_USERNAME" not in child
    assert "UV_INDEX_PRIVATE_PASSWORD" not in child
    assert "UV_PUBLISH_TOKEN" not in child
    assert child["UV_INDEX_URL"] == "https://pypi.example/simple"
    assert child["UV_EXTRA_INDEX_URL"] == "https://one.example/simple https://two.example/simple"
    assert child["UV_INDEX"] == "corp=https://corp.example/simple"
    assert child["PIP_INDEX_URL"] == "https://pip.example/simple"
    assert child["PIP_EXTRA_INDEX_URL"] == "https://more.example/simple"
    assert child["HOME"] == "/home/user"
    assert child["PATH"] == "/usr/bin"
    assert CREDENTIALS["UV_INDEX_URL"].startswith("https://bob:")  # the input is not changed
    flat = repr(child)
    for secret in ("alice", "s3cr@t", "hunter2", "p%40ss", "tok@", "pipsecret", "x1y2z3"):
        assert secret not in flat


def test_credentials_in_tool_output_are_masked() -> None:
    """Every credential value (and its decoded form, and any URL userinfo) becomes ***."""
    output = (
        "error: 401 for alice with s3cr@t-pw at https://bob:hunter2@pypi.example/simple\n"
        "retrying https://carol:p@ss@one.example/simple as carol, p%40ss and p@ss\n"
        "token pypi-publish-token, pip x1y2z3 erin pipsecret dave tok\n"
        "from uv.toml: https://zed:zedpw@elsewhere.example/simple\n"
    )
    masked = credentials.mask_credentials(output, CREDENTIALS)
    for secret in (
        "alice",
        "s3cr@t",
        "hunter2",
        "carol",
        "p%40ss",
        "p@ss",
        "publish-token",
        "x1y2z3",
        "pipsecret",
        "zedpw",
        "zed:",
    ):
        assert secret not in masked, secret
    assert "https://***@pypi.example/simple" in masked
    assert "https://***@elsewhere.example/simple" in masked


# -- names -------------------------------------------------------------------------------------

PYPROJECT = """
[project]
name = "p"
version = "1"
[project.optional-dependencies]
test = []
Postgres_Driver = []
[dependency-groups]
lint = []
"""


def test_unknown_extras_and_groups_are_refused_before_uv_runs(tmp_path: Path) -> None:
    """uv only warns about an unknown extra; testfleet refuses it naming the fix."""
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    check_names(tmp_path, ("test", "postgres-driver"), ("lint",))
    with pytest.raises(ConfigError) as caught:
        check_names(tmp_path, ("tset",), ())
    assert caught.value.message == (
        "extras: the project defines no extra 'tset'; did you mean 'test'? (its extras:"
        " Postgres_Driver, test); fix the name in extras, or add it to"
        " [project.optional-dependencies] in pyproject.toml"
    )
    with pytest.raises(ConfigError, match=r"no dependency group 'test'.*\[dependency-groups\]"):
        check_names(tmp_path, (), ("test",))


def test_dynamic_extras_and_uv_dev_dependencies_are_accepted(tmp_path: Path) -> None:
    """Extras a build backend computes cannot be checked; uv's dev-dependencies are `dev`."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\ndynamic = ["optional-dependencies"]\n'
        '[tool.uv]\ndev-dependencies = ["pytest"]\n'
    )
    check_names(tmp_path, ("anything",), ("dev",))


# -- one interpreter as it is ------------------------------------------------------------------


def test_an_interpreter_path_or_nothing_configured_makes_no_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """python unset: the running interpreter, labelled X.Y; a path: that interpreter, labelled
    as configured. uv is not needed for either."""
    monkeypatch.setattr("testfleet.venvs.uv.find_uv_or_none", lambda: None)
    (target,) = venvs.prepare_targets(Project(tmp_path, validate({})), say=print)
    assert target == venvs.PythonTarget(
        RUNNING, sys.executable, ".".join(map(str, sys.version_info[:3])), None, False
    )
    fake = fake_python(tmp_path / "bin" / "py", "3.99.7", implementation="pypy")
    project = Project(tmp_path, validate({"python": "bin/py"}))
    (target,) = venvs.prepare_targets(project, say=print)
    assert target == venvs.PythonTarget("bin/py", str(fake), "3.99.7", None, False)


# -- building, with a fake uv ------------------------------------------------------------------

FAKE_UV = r"""
echo "$* | env=${UV_PROJECT_ENVIRONMENT:-}" >> "$FAKE_UV_LOG"
for last; do :; done
case "$1" in
  --version) echo "uv 0.0.1 (fake)" ;;
  venv)
    if [ -n "${FAKE_UV_HANG:-}" ]; then
      echo $$ > "$FAKE_UV_PID"
      exec sleep 60
    fi
    mkdir -p "$last/bin" "$last/lib/python3.99/site-packages"
    ln -s /bin/true "$last/bin/python"
    if [ -z "${FAKE_UV_NO_PYTEST:-}" ]; then
      mkdir "$last/lib/python3.99/site-packages/pytest-9.0.dist-info"
      printf 'Metadata-Version: 2.1\nName: pytest\nVersion: 9.0\n' \
        > "$last/lib/python3.99/site-packages/pytest-9.0.dist-info/METADATA"
    fi ;;
  *)
    if [ -n "${FAKE_UV_FAIL:-}" ]; then printf '%s\n' "$FAKE_UV_FAIL"; exit 2; fi ;;
esac
"""


@dataclass
class FakeUv:
    log: Path
    pid: Path

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def fake_uv(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeUv]:
    uv_binary = script(machine.root / "fake-uv" / "uv", FAKE_UV)
    monkeypatch.setattr("testfleet.venvs.uv.find_uv_or_none", lambda: uv_binary)
    fake = FakeUv(machine.root / "uv.log", machine.root / "uv.pid")
    monkeypatch.setenv("FAKE_UV_LOG", str(fake.log))
    monkeypatch.setenv("FAKE_UV_PID", str(fake.pid))
    for version in ("3.98.1", "3.99.2"):
        x_y = version.rsplit(".", 1)[0]
        fake_python(machine.pyenv / "versions" / version / "bin" / f"python{x_y}", version)
    yield fake
    if fake.pid.exists():
        pid = int(fake.pid.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def matrix(root: Path, pyproject: str = PYPROJECT, **table: object) -> Project:
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(pyproject)
    return Project(root, validate({"python": ["3.98", "3.99"], **table}))


def test_builds_install_the_project_as_configured_then_are_reused(
    tmp_path: Path, fake_uv: FakeUv
) -> None:
    """Without uv.lock: `uv venv` from the found interpreter, then an editable install with
    the extras and groups; the second run only asks uv its version."""
    project = matrix(tmp_path / "p", extras="test,postgres-driver", **{"dependency-groups": "lint"})
    said: list[str] = []
    targets = venvs.prepare_targets(project, say=said.append)
    root = project.root
    assert [(t.label, t.version, t.reused) for t in targets] == [
        ("3.98", "3.98.1", False),
        ("3.99", "3.99.2", False),
    ]
    assert targets[1].python == str(root / ".testfleet/envs/3.99/bin/python")
    assert targets[1].venv_dir == root / ".testfleet/envs/3.99"
    calls = fake_uv.calls()
    assert calls[0] == "--version | env="
    interpreter = tmp_path / "pyenv/versions/3.99.2/bin/python3.99"
    assert (
        f"venv --no-project --no-python-downloads --python {interpreter}"
        f" {root}/.testfleet/envs/3.99 | env="
    ) in calls
    assert (
        f"pip install --python {root}/.testfleet/envs/3.99/bin/python"
        f" -e {root}[test,postgres-driver] --group {root}/pyproject.toml:lint | env="
    ) in calls
    words = {word for call in calls for word in call.split(" | ")[0].split()}
    assert not {w for w in words if w.startswith("testfleet")}, "testfleet is never installed"
    assert any(
        line.startswith("python 3.99: environment .testfleet/envs/3.99 made in ") for line in said
    )

    fake_uv.log.unlink()
    said.clear()
    again = venvs.prepare_targets(project, say=said.append)
    assert [t.reused for t in again] == [True, True]
    assert fake_uv.calls() == ["--version | env="]
    assert sorted(said) == [
        "python 3.98: environment .testfleet/envs/3.98 is up to date (reused)",
        "python 3.99: environment .testfleet/envs/3.99 is up to date (reused)",
    ]

    (root / "pyproject.toml").write_text(PYPROJECT + "# edited\n")
    (root / ".testfleet/envs/3.99/stale").write_text("from the old build")
    rebuilt = venvs.prepare_targets(project, say=said.append)
    assert [t.reused for t in rebuilt] == [False, False]
    assert not (root / ".testfleet/envs/3.99/stale").exists(), "a rebuild starts from scratch"


def test_a_locked_project_is_synced_frozen_with_exactly_its_groups(
    tmp_path: Path, fake_uv: FakeUv
) -> None:
    """With uv.lock: `uv sync --frozen` into the venv (UV_PROJECT_ENVIRONMENT), the extras, and
    only the groups asked for."""
    project = matrix(tmp_path / "p", extras="test", **{"dependency-groups": "lint"})
    (project.root / "uv.lock").write_text("version = 1\n")
    venvs.prepare_targets(project, say=lambda _: None)
    venv = project.root / ".testfleet/envs/3.98"
    assert (
        f"sync --project {project.root} --frozen --python {venv}/bin/python --no-default-groups"
        f" --extra test --group lint | env={venv}"
    ) in fake_uv.calls()


def test_pytest_and_coverage_are_added_when_missing_and_said_once(
    tmp_path: Path, fake_uv: FakeUv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venv without pytest (or coverage, with --coverage) gets them, constrained to what is
    installed so the project's own packages stay as they are; the run says so once."""
    monkeypatch.setenv("FAKE_UV_NO_PYTEST", "1")
    project = matrix(tmp_path / "p", coverage=True)
    said: list[str] = []
    venvs.prepare_targets(project, say=said.append)
    installs = [c for c in fake_uv.calls() if c.startswith("pip install") and "--constraint" in c]
    assert len(installs) == 2
    assert all(call.endswith(" pytest coverage | env=") for call in installs)
    assert len([line for line in said if line.startswith("pytest is not among")]) == 1
    assert len([line for line in said if line.startswith("coverage is not among")]) == 1
    assert not list((project.root / ".testfleet/envs/3.98").glob(".constraints-*"))


def test_a_failed_build_is_masked_and_not_reused(
    tmp_path: Path, fake_uv: FakeUv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv's failure is a ServiceError with its last lines as details, credentials masked; the
    half-built venv has no fingerprint, so the next run builds it again."""
    monkeypatch.setenv("UV_INDEX_CORP_USERNAME", "alice")
    monkeypatch.setenv("UV_INDEX_CORP_PASSWORD", "pw-9f8e7d")
    monkeypatch.setenv(
        "FAKE_UV_FAIL",
        "error: Failed to fetch https://alice:pw-9f8e7d@corp.example/simple/x/\n"
        "  Caused by: HTTP status client error (401 Unauthorized) for alice / pw-9f8e7d",
    )
    project = matrix(tmp_path / "p")
    with pytest.raises(ServiceError) as caught:
        venvs.prepare_targets(project, say=lambda _: None)
    error = caught.value
    assert error.message.startswith("python 3.98: uv pip install failed (exit 2);")
    assert "401 Unauthorized" in error.details
    assert "alice" not in error.details
    assert "pw-9f8e7d" not in error.details
    assert "https://***@corp.example" in error.details
    venv = project.root / ".testfleet/envs/3.98"
    assert venv.exists()
    assert not (venv / FINGERPRINT_NAME).exists()

    monkeypatch.delenv("FAKE_UV_FAIL")
    targets = venvs.prepare_targets(project, say=lambda _: None)
    assert [t.reused for t in targets] == [False, False]


def test_uvs_word_on_the_users_mistake_is_a_config_error(
    tmp_path: Path, fake_uv: FakeUv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version the project's requires-python excludes is the user's to fix (exit 2)."""
    monkeypatch.setenv(
        "FAKE_UV_FAIL",
        "error: The current Python version (3.98.1) is not compatible with the locked Python"
        " requirement: `>=3.99`",
    )
    with pytest.raises(ConfigError) as caught:
        venvs.prepare_targets(matrix(tmp_path / "p"), say=lambda _: None)
    assert caught.value.message == (
        "python 3.98: uv: The current Python version (3.98.1) is not compatible with the locked"
        " Python requirement: `>=3.99`; drop this version from python, or widen the project's"
        " requires-python"
    )


def test_a_uv_that_hangs_is_stopped_at_the_timeout(
    tmp_path: Path, fake_uv: FakeUv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv runs are bounded: past the timeout uv is killed and the error says so."""
    monkeypatch.setattr(venvs, "UV_TIMEOUT", 0.5)
    monkeypatch.setenv("FAKE_UV_HANG", "1")
    with pytest.raises(ServiceError, match=r"uv venv did not finish in 0.5 s and was stopped"):
        venvs.prepare_targets(matrix(tmp_path / "p"), say=lambda _: None)


def test_ctrl_c_stops_every_uv(
    tmp_path: Path, fake_uv: FakeUv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while uv builds raises KeyboardInterrupt at once, even when the kernel gave it to
    the build's thread, and only after uv is gone (the fixture checks it is no more). "At
    once" is shown by events, not a clock: uv (which sleeps 60 s) was killed by a signal, so
    the interrupt did not wait for it to finish."""
    monkeypatch.setenv("FAKE_UV_HANG", "1")  # uv writes its pid, then sleeps 60 s
    start = UvRunner._start
    started: list[subprocess.Popen[str]] = []

    def start_then_ctrl_c(runner: UvRunner, *args: Any) -> subprocess.Popen[str]:
        proc = start(runner, *args)
        if args[0][0] == "venv":
            deadline = time.monotonic() + 10
            while not fake_uv.pid.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            # To this build thread: the main thread, waiting on it, hears of it only by waiting
            # in slices (else only when the build ends, 60 s later).
            started.append(proc)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        return proc

    monkeypatch.setattr(UvRunner, "_start", start_then_ctrl_c)
    project = matrix(tmp_path / "p", python="3.99")
    with pytest.raises(KeyboardInterrupt):
        venvs.prepare_targets(project, say=lambda _: None)
    (uv,) = started
    assert uv.returncode is not None
    assert uv.returncode < 0, f"uv ended by itself ({uv.returncode}): the interrupt waited for it"
    assert fake_uv.pid.exists()
    assert not (project.root / ".testfleet/envs/3.99" / FINGERPRINT_NAME).exists()


def test_a_second_run_waits_for_the_one_building_the_same_environment(
    tmp_path: Path, fake_uv: FakeUv
) -> None:
    """Two runs in one project never build one environment at once: the second says it waits,
    and goes on when the first is done."""
    project = matrix(tmp_path / "p", python="3.99")
    venvs_dir = project.root / VENVS_DIR
    venvs_dir.mkdir(parents=True)
    other_run = os.open(venvs_dir / ".3.99.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other_run, fcntl.LOCK_EX)
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if "waiting for another testfleet" in line:
            os.close(other_run)  # the other run finishes

    (target,) = venvs.prepare_targets(project, say=say)
    assert said[0] == "python 3.99: waiting for another testfleet making .testfleet/envs/3.99"
    assert not target.reused
