"""`--with KINDS` end to end: a project whose pyproject.toml has no [tool.testfleet] gets real
PostgreSQL and Valkey services, isolated per lane, from the command line alone; `up --with`
serves them to the shell and to runs with the same `--with`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from testfleet.options import OPTIONS
from testfleet.rundir import marked_processes
from testfleet.up.dotenv import read_dotenv
from tests.helpers import wait_until_up, write_pyproject

pytestmark = pytest.mark.e2e

# Each module's first test makes the same table and key in its lane's services, then holds
# them until the other module's test has made its own: both lanes hold data at once, so a
# database or server they shared would show the other lane's. A lane asks for more work
# before its last test, so `test_after` keeps the other module for the other lane.
MODULE = """
import os, time
from pathlib import Path

import psycopg, redis

NAME = {name!r}
OTHER = {other!r}


def test_own_data():
    lane = os.environ["TESTFLEET_LANE"]
    client = redis.Redis.from_url(os.environ["VALKEY_URL"])
    with psycopg.connect(os.environ["POSTGRES_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE owner (lane text)")
        conn.execute("INSERT INTO owner VALUES (%s)", (lane,))
        assert client.set("owner", lane, nx=True)
        Path(NAME + ".lane").write_text(
            lane + " " + os.environ["POSTGRES_URL"] + " " + os.environ["VALKEY_URL"]
        )
        deadline = time.monotonic() + 60
        while not Path(OTHER + ".lane").exists():
            assert time.monotonic() < deadline, "the other lane never ran"
            time.sleep(0.02)
        assert conn.execute("SELECT lane FROM owner").fetchall() == [(lane,)]
    assert client.keys("*") == [b"owner"]
    assert client.get("owner") == lane.encode()
    client.close()


def test_after():
    pass
"""


def clean_environ() -> dict[str, str]:
    """This shell's environment without its TESTFLEET_* options (a developer's may be set)."""
    options = {option.env for option in OPTIONS}
    return {key: value for key, value in os.environ.items() if key not in options}


@pytest.fixture
def run_base(own_run_base: Path) -> Path:
    """The test's own run-dir base (conftest.py): it looks only at the runs it started."""
    return own_run_base


def bare_project(root: Path) -> Path:
    """Only [project] in pyproject.toml: no [tool.testfleet] at all."""
    write_pyproject(root, "")
    for name, other in (("a", "b"), ("b", "a")):
        (root / f"test_{name}.py").write_text(MODULE.format(name=name, other=other))
    return root


def left_running(stderr: str, base: Path) -> list[int]:
    """Processes still carrying the mark of a run the command said it made (`...; run
    20260101-120000-abcdef`): its servers, lanes and whatever their tests started."""
    runs = re.findall(r"; run (\d{8}-\d{6}-[0-9a-f]+)$", stderr, re.MULTILINE)
    assert runs, stderr
    return [pid for run in runs for pid in marked_processes(str(base / run))]


def test_run_with_postgres_and_valkey_in_a_project_without_config(tmp_path: Path, run_base: Path):
    """`testfleet run --with postgres,valkey -n 2` in a project with no [tool.testfleet]:
    each lane gets its own database and Valkey through POSTGRES_URL and VALKEY_URL, every
    test passes, and nothing of the run is left."""
    project = bare_project(tmp_path / "project")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "testfleet",
            "run",
            "--with",
            "postgres,valkey",
            "-n",
            "2",
            "--run-dir",
            str(run_base),
            "--",
            "-p",
            "no:cacheprovider",
        ],
        cwd=project,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "(postgres, valkey, 2 lane(s))" in result.stderr
    assert "4 passed in" in result.stderr
    seen = [(project / f"{name}.lane").read_text().split() for name in "ab"]
    assert sorted(lane for lane, _, _ in seen) == ["1", "2"]
    assert seen[0][1] != seen[1][1]  # a database each
    assert seen[0][2] != seen[1][2]  # a Valkey server each
    assert left_running(result.stderr, run_base) == []
    assert list(run_base.iterdir()) == []


def test_up_with_valkey_serves_the_shell_and_runs_with_the_same_with(
    tmp_path: Path, run_base: Path
):
    """`up --with valkey` in a project without config prints VALKEY_URL and writes it to the
    env file; a run with the same --with uses the up's stack; Ctrl-C stops everything."""
    project = bare_project(tmp_path / "project")
    for name in "ab":
        (project / f"test_{name}.py").unlink()
    (project / "test_valkey.py").write_text(
        "import os, redis\n"
        "def test_ping():\n"
        "    assert redis.Redis.from_url(os.environ['VALKEY_URL']).ping()\n"
    )
    env = clean_environ()
    up = subprocess.Popen(
        [sys.executable, "-m", "testfleet", "up", "--with", "valkey", "--run-dir", str(run_base)],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    try:
        said += wait_until_up(up)
        values = read_dotenv(project / ".testfleet" / "env")
        client = redis.Redis.from_url(values["VALKEY_URL"])
        assert client.ping()
        client.close()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "testfleet",
                "run",
                "--with",
                "valkey",
                "--",
                "-p",
                "no:cacheprovider",
            ],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert run.stderr.startswith("testfleet: using the stack of the running `testfleet up`")
    finally:
        up.send_signal(signal.SIGINT)
        said.append(up.communicate(timeout=60)[1])
    assert not (project / ".testfleet" / "env").exists()
    assert left_running("".join(said), run_base) == []
    assert list(run_base.iterdir()) == []
