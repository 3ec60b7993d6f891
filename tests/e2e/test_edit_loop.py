"""The edit-test loop: `testfleet run` on a running `testfleet up`'s stack with fresh lanes,
lanes started while services start (their env still arrives before conftest imports), and
pytest's own selection options."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from testfleet.ports import free_port
from testfleet.rundir import process_start_ticks
from testfleet.up.dotenv import read_dotenv
from tests.helpers import alive, run_cli, start_cli, wait_for, wait_until_up, write_pyproject

pytestmark = pytest.mark.e2e

CONFIG = "[tool.testfleet]\n[tool.testfleet.services.postgres]\n[tool.testfleet.services.valkey]\n"
USING = "testfleet: using the stack of the running `testfleet up`"

# Fails unless its lane is fresh: the table and the key it makes must not be there yet.
FRESH_TEST = """
import os, time
import psycopg, redis

def test_lane_is_fresh():
    with psycopg.connect(os.environ["POSTGRES_URL"], autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('marker')").fetchone()[0] is None
        conn.execute("CREATE TABLE marker (x int)")
    client = redis.Redis.from_url(os.environ["VALKEY_URL"])
    assert client.get("marker") is None
    client.set("marker", "1")
    client.close()
    with open(os.environ["SEEN"], "a") as seen:
        seen.write(os.environ["POSTGRES_URL"] + " " + os.environ["VALKEY_URL"] + "\\n")
    if os.environ.get("HOLD"):
        open(os.environ["HOLD"], "w").write(str(os.getpid()))
        time.sleep(300)
"""


@pytest.fixture(params=["server", "database"])
def project(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    # Valkey's DB numbers (isolation = "database") are flushed for the next run; its own
    # servers per lane are stopped and started afresh.
    root = write_pyproject(tmp_path / "project", CONFIG + f'isolation = "{request.param}"\n')
    (root / "tests").mkdir()
    (root / "tests" / "test_fresh.py").write_text(FRESH_TEST)
    return root


@contextlib.contextmanager
def running_up(project: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A `testfleet up` serving, until the block ends (SIGINT, as Ctrl-C)."""
    process = start_cli(project, "up", *args)
    try:
        wait_until_up(process)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


@pytest.fixture
def up(project: Path) -> Iterator[subprocess.Popen[str]]:
    with running_up(project, "-n", "1") as process:
        yield process


def test_runs_share_a_running_up_and_every_run_gets_fresh_lanes(
    project: Path, up: subprocess.Popen[str], tmp_path: Path
):
    seen = tmp_path / "seen"
    env = {"SEEN": str(seen)}
    for lanes in ("1", "1", "3"):
        # -n 3 needs more lanes than the one kept warm: the up makes them on demand.
        result = run_cli("run", "-n", lanes, "--group-by", "test", cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stderr.startswith(USING), result.stderr
        assert "lanes ready in" in result.stderr
        assert "stack ready in" not in result.stderr
    used = seen.read_text().splitlines()
    assert len(used) == 3
    developer = read_dotenv(project / ".testfleet" / "env")
    # The developer's lane (what `up` printed) is never handed to a run.
    assert all(developer["POSTGRES_URL"] not in line for line in used)
    # Lanes given back are recycled: the up's server holds the developer's database and the
    # warm lane's, nothing left from the runs.

    def lane_databases() -> list[str]:
        with psycopg.connect(developer["POSTGRES_URL"], autocommit=True) as conn:
            names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
        return [n for n in names if n.rsplit("_", 1)[-1].isdigit()]

    # Recycling happens in the background after each run.
    wait_for(lambda: len(lane_databases()) == 2, what="the runs' lanes to be recycled")


def test_a_changed_config_is_not_shared_and_says_which_setting(
    project: Path, up: subprocess.Popen[str], tmp_path: Path
):
    with (project / "pyproject.toml").open("a") as config:
        config.write("start-timeout = 31\n")  # under [tool.testfleet.services.valkey]
    result = run_cli("run", cwd=project, env={"SEEN": str(tmp_path / "seen")})
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert "not using the running `testfleet up`" in first
    assert "services.valkey.start-timeout" in first
    assert "stack ready in" in result.stderr
    own = run_cli("run", "--own-stack", cwd=project, env={"SEEN": str(tmp_path / "seen")})
    assert own.returncode == 0, own.stderr
    assert "testfleet up" not in own.stderr


def test_a_killed_run_gives_its_lanes_back(
    project: Path, up: subprocess.Popen[str], tmp_path: Path
):
    hold = tmp_path / "hold"
    env = {"SEEN": str(tmp_path / "seen"), "HOLD": str(hold)}
    process = start_cli(project, "run", env=env)
    wait_for(lambda: hold.exists() and hold.read_text() != "", what="the test to start")
    lane = int(hold.read_text())
    ticks = process_start_ticks(lane)
    assert ticks is not None
    process.kill()
    process.communicate(timeout=30)
    # At once, while the killed run's lane may still be alive: the up stops it before the
    # lane goes to another run, which gets it fresh (no table, no key).
    result = run_cli("run", cwd=project, env={"SEEN": str(tmp_path / "seen")})
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(USING)
    assert alive([(lane, ticks)]) == []


def test_a_dead_server_of_a_runs_lane_ends_that_run_and_the_up_goes_on(
    project: Path, up: subprocess.Popen[str], tmp_path: Path
):
    if 'isolation = "database"' in (project / "pyproject.toml").read_text():
        pytest.skip("one Valkey server for every lane: it is the developer's too")
    hold, seen = tmp_path / "hold", tmp_path / "seen"
    process = start_cli(project, "run", env={"SEEN": str(seen), "HOLD": str(hold)})
    wait_for(lambda: hold.exists() and hold.read_text() != "", what="the test to start")
    url = urllib.parse.urlsplit(seen.read_text().split()[1])
    address = f"{url.hostname}:{url.port}"  # the URL carries the run's password too
    servers = [
        p
        for p in psutil.Process(up.pid).children(recursive=True)
        if "valkey" in p.name() and address in " ".join(p.cmdline())
    ]
    assert len(servers) == 1
    servers[0].kill()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "exited unexpectedly" in stderr
    assert "in the running `testfleet up`" in stderr
    # The up replaced that lane and serves the next run.
    assert up.poll() is None
    again = run_cli("run", cwd=project, env={"SEEN": str(seen)})
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith(USING)


def test_a_run_that_speaks_nonsense_does_not_stop_the_up(
    project: Path, up: subprocess.Popen[str], tmp_path: Path
):
    descriptor = json.loads((project / ".testfleet" / ".env.up.json").read_text())
    for garbage in (b"not json\n", b'{"type": "lease"}\n', b'{"type": "hello"}\n{"x": 1}\n'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(descriptor["socket"])
            sock.sendall(garbage)
            sock.settimeout(10)
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass
    assert up.poll() is None
    result = run_cli("run", cwd=project, env={"SEEN": str(tmp_path / "seen")})
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(USING)


def test_up_with_a_fixed_port_per_lane_keeps_no_lanes_and_runs_say_why(tmp_path: Path):
    # A fixed port of the test's own (not 6379: a second copy of the suite may hold that).
    config = f"[tool.testfleet.services.valkey]\nport = {free_port()}\n"
    project = write_pyproject(tmp_path, config)
    (project / "test_a.py").write_text("def test_a(): pass\n")
    process = start_cli(project, "up")
    try:
        lines = wait_until_up(process)
        assert any("`testfleet run` starts its own stack" in line for line in lines), lines
        result = run_cli("run", cwd=project)
        assert "not using the running `testfleet up`" in result.stderr.splitlines()[0]
        # Its own stack needs the port the up holds: named, not a traceback.
        assert result.returncode == 3, result.stderr
        assert "already in use" in result.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


LANE_ENV_CONFTEST = """
import json, os
# Read at import time, as suites do: it must already be the lane's final env.
AT_IMPORT = {k: os.environ.get(k) for k in ("VALKEY_URL", "TESTFLEET_LANE")}
BOOT = open("/proc/self/cmdline", "rb").read().split(b"\\0")
"""

LANE_ENV_TEST = """
import json, os
from conftest import AT_IMPORT, BOOT

def test_env_was_there_at_import():
    assert AT_IMPORT["VALKEY_URL"] == os.environ["VALKEY_URL"]
    assert AT_IMPORT["TESTFLEET_LANE"] == os.environ["TESTFLEET_LANE"]
    with open(os.environ["REPORT"], "a") as report:
        report.write(json.dumps({"early": any(b"worker/boot" in part for part in BOOT)}) + "\\n")
"""


def test_a_lane_whose_env_sets_interpreter_settings_is_started_with_them(tmp_path: Path):
    """PYTHONDONTWRITEBYTECODE is read as Python starts: an early lane started without it
    is not used."""
    config = '[tool.testfleet.env]\nPYTHONDONTWRITEBYTECODE = "1"\n'
    project = write_pyproject(tmp_path / "p", config)
    (project / "test_a.py").write_text(
        "import sys\ndef test_flag(): assert sys.dont_write_bytecode\n"
    )
    result = run_cli("run", "--own-stack", cwd=project, env={"PYTHONDONTWRITEBYTECODE": ""})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("early", ["1", "0"])
def test_lanes_started_early_see_their_env_before_conftest_imports(tmp_path: Path, early: str):
    project = write_pyproject(tmp_path / "p", "[tool.testfleet.services.valkey]\n")
    (project / "conftest.py").write_text(LANE_ENV_CONFTEST)
    for name in ("a", "b"):
        (project / f"test_{name}.py").write_text(LANE_ENV_TEST)
    report = tmp_path / "report"
    result = run_cli(
        "run",
        "-n",
        "2",
        "--own-stack",
        cwd=project,
        env={"REPORT": str(report), "TESTFLEET_EARLY_LANES": early},
    )
    assert result.returncode == 0, result.stderr
    assert "─ 2 passed in" in result.stderr
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert lines == [{"early": early == "1"}] * 2, (lines, result.stderr)


def test_pytest_selection_options_pick_the_tests(tmp_path: Path):
    project = write_pyproject(tmp_path, "[tool.testfleet]\n")
    (project / "tests").mkdir()
    (project / "tests" / "test_a.py").write_text(
        "import os\ndef test_one(): pass\ndef test_two(): assert not os.environ.get('BREAK')\n"
    )
    (project / "tests" / "test_b.py").write_text(
        "import pytest\n@pytest.mark.slow\ndef test_three(): pass\n"
    )
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    path = run_cli("run", "tests/test_b.py", cwd=project)
    assert path.returncode == 0, path.stderr
    assert re.search(r"first test result [\d.]+ s after the command started", path.stderr)
    assert "─ 1 passed in" in path.stderr
    keyword = run_cli("run", "-k", "one or three", cwd=project)
    assert keyword.returncode == 0, keyword.stderr
    assert "─ 2 passed in" in keyword.stderr
    marked = run_cli("run", "-m", "slow", cwd=project)
    assert marked.returncode == 0, marked.stderr
    assert "─ 1 passed in" in marked.stderr
    failing = run_cli("run", cwd=project, env={"BREAK": "1"})
    assert failing.returncode == 1
    last = run_cli("run", "--lf", cwd=project, env={**os.environ, "BREAK": "1"})
    assert last.returncode == 1
    # Only the test that failed ran: no passes in the counts.
    assert "─ 1 failed in" in last.stderr, last.stderr


def test_rechecks_lease_fresh_lanes_from_the_up(tmp_path: Path):
    """The run's lanes and its rechecks' lanes all come from the up; the leaking test is
    still named (its key would stay in a lane that was not fresh)."""
    from tests.e2e.test_recheck import LEAKS_INTO_VALKEY

    project = write_pyproject(
        tmp_path, '[tool.testfleet]\norder = "pytest"\n[tool.testfleet.services.valkey]\n'
    )
    (project / "test_state.py").write_text(LEAKS_INTO_VALKEY)
    with running_up(project):
        result = run_cli("run", "--recheck", "on", cwd=project, timeout=300)
    assert result.returncode == 1
    assert result.stderr.startswith(USING)
    assert "fails after test_state.py::test_leaves_a_key_behind" in result.stderr


def test_a_run_needing_more_lanes_than_the_up_can_give_says_why(tmp_path: Path):
    """Valkey's 16 DB numbers: the developer's lane holds one, so 16 more cannot be had."""
    project = write_pyproject(
        tmp_path, '[tool.testfleet.services.valkey]\nisolation = "database"\n'
    )
    (project / "test_a.py").write_text("def test_a(): pass\n")
    with running_up(project, "-n", "2"):
        result = run_cli("run", "-n", "16", cwd=project, timeout=300)
    first = result.stderr.splitlines()[0]
    assert "not using the running `testfleet up`" in first
    assert "16" in first
    # Its own stack has the 16 DB numbers to itself.
    assert result.returncode == 0, result.stderr


def test_auto_lanes_for_one_measured_file_are_one_lane(tmp_path: Path):
    project = write_pyproject(tmp_path, '[tool.testfleet]\nlanes = "auto"\n')
    (project / "tests").mkdir()
    for name in ("a", "b"):
        (project / "tests" / f"test_{name}.py").write_text("def test_x(): pass\n")
    durations = project / ".testfleet" / "durations.json"
    durations.parent.mkdir()
    durations.write_text(
        json.dumps({"durations": {"tests/test_a.py::test_x": 0.1, "tests/test_b.py::test_x": 9}})
    )
    one = run_cli("run", "tests/test_a.py", cwd=project)
    assert one.returncode == 0, one.stderr
    assert 'lanes = "auto": 1 lane(s)' in one.stderr
    assert one.stderr.count("lane 1:") == 1
    assert "lane 2:" not in one.stderr
    whole = run_cli("run", cwd=project)
    assert 'lanes = "auto"' not in whole.stderr


def test_a_shared_server_of_the_up_dying_ends_the_run_and_the_up(
    project: Path, up: subprocess.Popen[str], tmp_path: Path
):
    hold = tmp_path / "hold"
    process = start_cli(project, "run", env={"SEEN": str(tmp_path / "seen"), "HOLD": str(hold)})
    wait_for(lambda: hold.exists() and hold.read_text() != "", what="the test to start")
    postgres = [p for p in psutil.Process(up.pid).children() if p.name() == "postgres"]
    assert len(postgres) == 1  # one server, a database per lane
    postgres[0].kill()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "service postgres (template) exited unexpectedly" in stderr
    assert up.wait(timeout=60) == 3
