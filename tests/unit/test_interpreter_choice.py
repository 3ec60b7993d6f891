"""Which interpreter lanes run with no `python` setting (the project's environment before
testfleet's own), uv's flat-layout failure as one line, and an up's env file that changes no
option of a later run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from testfleet.envvars import LANE_COUNT
from testfleet.errors import ConfigError
from testfleet.interpreter import default_interpreter
from testfleet.options import OPTIONS
from testfleet.project import load_project
from testfleet.stack import lane_environment
from testfleet.up.dotenv import for_shells, read_dotenv, write_dotenv
from testfleet.venvs.failures import uv_failure
from testfleet.venvs.uv import UvOutput
from tests.helpers import project, write_pyproject

OWN_PREFIX = "/opt/testfleet-tool"
OWN = "/opt/testfleet-tool/bin/python"


def venv(folder: Path) -> Path:
    """A directory that looks like a venv to the choice: an executable bin/python."""
    python = folder / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    return python


def choose(root: Path, **environ: str) -> tuple[str, str]:
    chosen = default_interpreter(root, environ, own_prefix=OWN_PREFIX, own=OWN)
    return chosen.path, chosen.why


@pytest.fixture
def no_active_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.delenv("UV_PROJECT_ENVIRONMENT", raising=False)


def test_a_project_with_a_venv_runs_its_tests_there(tmp_path: Path, no_active_env: None) -> None:
    """Unset `python` and a project `.venv`: lanes run the project's .venv, not the
    interpreter running testfleet (a `uv tool install` of it)."""
    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\n")
    python = venv(root / ".venv")
    loaded = load_project(root, environ={})
    assert loaded.python == str(python)
    assert loaded.interpreter.why == "the project's .venv"


def test_the_active_venv_comes_first_unless_it_is_testfleets_own(tmp_path: Path) -> None:
    """$VIRTUAL_ENV is what plain pytest in that shell runs; testfleet's own environment,
    activated to run testfleet, is skipped for the project's .venv."""
    root = tmp_path / "p"
    project_python = venv(root / ".venv")
    active = venv(tmp_path / "active")
    assert choose(root, VIRTUAL_ENV=str(tmp_path / "active")) == (
        str(active),
        "the active $VIRTUAL_ENV",
    )
    assert choose(root, VIRTUAL_ENV=OWN_PREFIX)[0] == str(project_python)


def test_uvs_project_environment_and_workspace_root(tmp_path: Path) -> None:
    """$UV_PROJECT_ENVIRONMENT (relative to the workspace root) before .venv; a workspace
    member without its own .venv uses the workspace root's, as uv does."""
    workspace = tmp_path / "ws"
    write_pyproject(workspace, '[tool.uv.workspace]\nmembers = ["pkgs/*"]\n')
    member = write_pyproject(workspace / "pkgs" / "a", "[tool.testfleet]\n")
    root_python = venv(workspace / ".venv")
    assert choose(member)[0] == str(root_python)
    custom = venv(workspace / "envs" / "ci")
    assert choose(member, UV_PROJECT_ENVIRONMENT="envs/ci") == (
        str(custom),
        "$UV_PROJECT_ENVIRONMENT",
    )


def test_testfleets_own_interpreter_says_why(tmp_path: Path) -> None:
    """No environment: testfleet's own, and the first line says there was none; a .venv
    without a working bin/python is named rather than silently passed over."""
    root = tmp_path / "p"
    root.mkdir()
    assert choose(root) == (OWN, "testfleet's own: no .venv in the project, no active venv")
    (root / ".venv").mkdir()
    path, why = choose(root)
    assert path == OWN
    venv_dir = root / ".venv"
    assert why == f"testfleet's own; the project's .venv ({venv_dir}) has no working bin/python"


def test_the_project_venv_that_runs_testfleet_is_its_running_interpreter(tmp_path: Path) -> None:
    """testfleet installed in the project's .venv: sys.executable, the path lane 1 was started
    with before the config was read."""
    root = tmp_path / "p"
    venv(root / ".venv")
    chosen = default_interpreter(root, {}, own_prefix=str(root / ".venv"), own=sys.executable)
    assert chosen.path == sys.executable


def test_a_named_interpreter_is_used_as_configured(tmp_path: Path, no_active_env: None) -> None:
    """`python` set: the project's .venv does not matter, and the why names the setting."""
    root = write_pyproject(tmp_path / "p", '[tool.testfleet]\npython = "py/bin/python"\n')
    venv(root / ".venv")
    loaded = load_project(root, cli={"python": ("other/bin/python",)}, environ={})
    assert loaded.python == str(root / "other" / "bin" / "python")
    assert loaded.interpreter.why == "--python"


# -- uv's flat-layout failure (`--python 3.12` of a repository with several packages) --------

# What uv 0.9 printed here for `uv pip install -e .` of a root holding packages a/ and b/.
FLAT_LAYOUT = """\
Using Python 3.12.4 environment at: .testfleet/envs/3.12
Resolved 1 package in 5ms
   Building flat @ file:///tmp/flat
error: Failed to build `flat @ file:///tmp/flat`
  cause: The build backend returned an error
  cause: Call to `setuptools.build_meta:__legacy__.get_requires_for_build_editable` failed \
(exit status: 1)

         [stderr]
         error: Multiple top-level packages discovered in a flat-layout: ['b', 'a'].

         To avoid accidental inclusion of unwanted files or directories,
         setuptools will not proceed with this build.

         If you are trying to create a single distribution with multiple packages
         on purpose, you should not rely on automatic discovery.
         Instead, consider the following options:

         1. set up custom discovery (`find` directive with `include` or `exclude`)
         2. use a `src-layout`
         3. explicitly set `py_modules` or `packages` with a list of names

         To find more information, look for "package discovery" on setuptools docs.

hint: Build failures usually indicate a problem with the package or the build environment
"""


def test_a_flat_layout_is_one_line_saying_to_give_the_interpreters_path() -> None:
    """setuptools' refusal is the user's to fix (exit 2), in one line with the fix."""
    error = uv_failure("3.12", "pip install", UvOutput(1, FLAT_LAYOUT), {}, fix=None, timeout=900.0)
    assert isinstance(error, ConfigError)
    assert error.message == (
        "python 3.12: uv: Multiple top-level packages discovered in a flat-layout: ['b', 'a'];"
        ' give the interpreter\'s path for such layouts (python = "PATH" in [tool.testfleet]'
        " or --python PATH: an environment the suite's requirements are installed in), or"
        " name the project's packages in [tool.setuptools] packages"
    )
    assert "\n" not in error.message


# -- the env file an up writes -------------------------------------------------------------

OPTION_VARIABLES = {option.env for option in OPTIONS}


def test_no_variable_of_a_lane_is_an_options_env_var(tmp_path: Path) -> None:
    """What every lane gets (and an up writes to its env file) sets no option of a testfleet
    started where it is: the lane count is TESTFLEET_LANE_COUNT, not the lanes option."""
    env = lane_environment(
        project(tmp_path, {}),
        {},
        {"run_id": "r", "lane": "1", "lanes": "3", "run_dir": "/x", "project_dir": "/p"},
        lanes=3,
    )
    assert env[LANE_COUNT] == "3"
    assert not set(env) & OPTION_VARIABLES


def test_the_env_file_leaves_out_option_variables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A variable of the `env` table named like an option's env var is left out of the file
    (and said); sourcing the file changes no option of a later run."""
    shells = for_shells(
        {"POSTGRES_URL": "postgresql://x", "TESTFLEET_TIMEOUT": "5", LANE_COUNT: "3"}
    )
    assert shells == {"POSTGRES_URL": "postgresql://x", LANE_COUNT: "1"}
    assert "TESTFLEET_TIMEOUT left out of the env file" in capsys.readouterr().err
    path = tmp_path / "env"
    write_dotenv(path, shells)
    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\nlanes = 3\ntimeout = 60\n")
    config = load_project(root, environ={**os.environ, **read_dotenv(path)}).config
    assert (config.lanes, config.timeout) == (3, 60)


def test_lane_1_starts_early_with_the_projects_interpreter(
    tmp_path: Path, no_active_env: None
) -> None:
    """`testfleet -C DIR run` starts lane 1 before the config is read: with the interpreter
    the config will choose when it names none, so that lane is not thrown away."""
    from testfleet.lanes.early import _likely_python

    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\n")
    python = venv(root / ".venv")
    (root / "tests").mkdir()
    assert _likely_python(["-C", str(root / "tests"), "run"]) == str(python)
    assert _likely_python(["-C", str(tmp_path), "run"]) == sys.executable  # no project there


def test_a_project_venv_that_does_not_run_names_itself(tmp_path: Path, no_active_env: None) -> None:
    """A .venv whose python does not run (its base interpreter removed, say): one line naming
    it and why it was chosen, not advice to leave `python` unset, which it is."""
    from testfleet.venvs import prepare_targets

    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\n")
    venv(root / ".venv")  # "#!/bin/sh" with no body: prints nothing, so no version
    with pytest.raises(ConfigError) as caught:
        prepare_targets(load_project(root, environ={}), say=lambda _: None)
    assert caught.value.message == (
        f"{root / '.venv' / 'bin' / 'python'} (the project's .venv) does not run as a Python"
        ' interpreter; repair or remove that environment, or set python = "PATH" in'
        " [tool.testfleet] (or --python PATH) to one with pytest installed"
    )
