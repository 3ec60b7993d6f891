"""Every failure is named: a service that dies while tests run, a crashed lane, an interrupt,
two `up`s on one env file, odd characters in reports, order changes, pytest's own settings."""

from __future__ import annotations

import json
import os
import signal
import urllib.parse
from pathlib import Path

import junitparser
import psutil
import pytest

from tests.e2e.test_lanes import FAULTS, junit_cases, make_suite
from tests.helpers import EXAMPLE, run_cli, start_cli, wait_for, wait_until_up, write_pyproject

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("kind", ["valkey", "nats"])
def test_service_dying_mid_run_is_named_and_reports_are_written(tmp_path: Path, kind: str):
    """kill -9 of a server while a test waits on it: the run names the service, its lane, its
    exit status and log, stops the lanes (no hang), writes the JUnit, and exits 3."""
    project = make_suite(
        tmp_path,
        {
            "tests/test_wait.py": (
                "import os, time\n"
                "def test_first(): pass\n"
                "def test_waits():\n"
                f"    open('waiting', 'w').write(os.environ['{kind.upper()}_URL'])\n"
                "    time.sleep(120)\n"
            ),
        },
        f"[tool.testfleet.services.{kind}]\n",
    )
    process = start_cli(project, "run", "-n", "1")
    wait_for((project / "waiting").exists, what="the test to start")
    port = urllib.parse.urlparse((project / "waiting").read_text()).port
    server = [
        c.pid
        for c in psutil.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
    ]
    assert len(server) == 1
    os.kill(server[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert f"service {kind} (lane 1) exited unexpectedly (killed by SIGKILL)" in stderr
    kept = project / ".testfleet" / "logs"
    assert f"its log: {kept}" in stderr
    assert any(kept.iterdir())
    cases = junit_cases(project / ".testfleet" / "junit.xml")
    assert cases["tests.test_wait::test_first"].is_passed
    waits = cases["tests.test_wait::test_waits"].result[0]
    assert isinstance(waits, junitparser.Error)
    assert f"service {kind} (lane 1) exited unexpectedly" in waits.message


def test_crash_reason_and_frames_are_in_the_terminal_summary(tmp_path: Path):
    """A segfaulting test: the summary says the lane crashed, by which signal, and shows the
    test's own frame from faulthandler's dump."""
    project = make_suite(tmp_path, {"tests/test_a.py": FAULTS["tests/test_a.py"]})
    result = run_cli("run", "-n", "2", cwd=project, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "crashed (killed by SIGSEGV) while running this test" in result.stderr
    assert "Fatal Python error: Segmentation fault" in result.stderr
    assert 'test_a.py", line 3 in test_crash' in result.stderr


def test_interrupted_test_is_an_error_not_skipped(tmp_path: Path):
    project = make_suite(
        tmp_path,
        {"tests/test_hang.py": "import time\ndef test_hang():\n    time.sleep(300)\n"},
    )
    (project / "tests" / "conftest.py").write_text(
        "def pytest_runtest_call(item):\n    open('started', 'w').close()\n"
    )
    process = start_cli(project, "run", "-n", "2")
    wait_for((project / "started").exists, what="the test to start")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    case = junit_cases(project / ".testfleet" / "junit.xml")["tests.test_hang::test_hang"]
    assert isinstance(case.result[0], junitparser.Error)
    assert case.result[0].message.startswith("interrupted while this test ran (after ")


def test_interrupt_before_collection_keeps_the_previous_junit(tmp_path: Path):
    project = make_suite(
        tmp_path,
        {
            "tests/conftest.py": (
                "import os, time\n"
                "if os.environ.get('SLOW_COLLECT'):\n"
                "    open('collecting', 'w').close()\n"
                "    time.sleep(300)\n"
            ),
            "tests/test_ok.py": "def test_ok(): pass\n",
        },
    )
    assert run_cli("run", "-n", "2", cwd=project).returncode == 0
    junit = project / ".testfleet" / "junit.xml"
    before = junit.read_text()
    process = start_cli(project, "run", "-n", "2", env={"SLOW_COLLECT": "1"})
    wait_for((project / "collecting").exists, what="collection to start")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "previous reports were left as they were" in stderr
    assert junit.read_text() == before


def test_second_up_on_the_same_env_file_is_refused(tmp_path: Path):
    project = write_pyproject(tmp_path, "[tool.testfleet.services.valkey]\n")
    first = start_cli(project, "up")
    wait_until_up(first)
    dotenv = project / ".testfleet" / "env"
    served = dotenv.read_text()
    second = run_cli("up", cwd=project)
    assert second.returncode == 2
    assert f"another `testfleet up` (pid {first.pid}) serves {dotenv}" in second.stderr
    assert dotenv.read_text() == served
    first.kill()  # SIGKILL: no teardown of its own; its reaper removes the env file
    first.communicate(timeout=30)
    wait_for(lambda: not dotenv.exists(), what="the killed up's env file to be removed")


def test_env_file_of_a_killed_up_is_detected(tmp_path: Path):
    """An env file left by an `up` nobody cleaned up after is named and replaced."""
    project = write_pyproject(tmp_path, "[tool.testfleet.services.valkey]\n")
    dotenv = project / ".testfleet" / "env"
    dotenv.parent.mkdir()
    dotenv.write_text("VALKEY_URL=redis://127.0.0.1:1/0\nTESTFLEET_RUN_ID=gone\n")
    up = start_cli(project, "up")
    log = wait_until_up(up)
    assert any("left by a `testfleet up` that was killed" in line for line in log)
    assert "TESTFLEET_RUN_ID=gone" not in dotenv.read_text()
    up.send_signal(signal.SIGINT)
    up.communicate(timeout=30)
    assert not dotenv.exists()


def test_control_characters_in_reports_lose_nothing(tmp_path: Path):
    project = make_suite(
        tmp_path,
        {
            "tests/test_odd.py": (
                "import pytest\n"
                "@pytest.mark.xfail(reason='bell \\x07 and \\x01')\n"
                "def test_xfail(): assert False\n"
                "def test_ansi(): print('\\x1b[31mred\\x1b[0m \\x01'); assert False\n"
                "@pytest.mark.skip(reason='\\x1b[1mbold\\x1b[0m')\n"
                "def test_skip(): pass\n"
                "@pytest.mark.parametrize('v', ['a::b', '1::int'])\n"
                "def test_p(v): pass\n"
            ),
        },
    )
    result = run_cli("run", "-n", "2", "--group-by", "test", cwd=project)
    assert result.returncode == 1, result.stderr
    assert "internal error" not in result.stderr
    cases = junit_cases(project / ".testfleet" / "junit.xml")
    assert len(cases) == 5
    assert "tests.test_odd::test_p[a::b]" in cases
    assert "tests.test_odd::test_p[1::int]" in cases
    stored = json.loads((project / ".testfleet" / "results.json").read_text())
    assert len(stored["results"]) == 5
    assert (project / ".testfleet" / "durations.json").exists()


def test_plan_counts_the_example_and_verbose_suites(tmp_path: Path):
    """plan collects through the lane plugin: `-q` in pytest-args, `-vv` in addopts and
    placeholders in pytest-args change nothing."""
    example = run_cli("plan", "-n", "4", cwd=EXAMPLE)
    assert example.returncode == 0, example.stderr
    assert example.stdout.startswith("36 tests in ")
    project = make_suite(
        tmp_path,
        {
            "conftest.py": (
                "import urllib.parse\n"
                "def pytest_addoption(parser):\n    parser.addoption('--redis-url')\n"
                "def pytest_configure(config):\n"
                "    assert urllib.parse.urlparse(config.getoption('--redis-url')).port\n"
            ),
            "tests/test_a.py": "def test_one(): pass\ndef test_two(): pass\n",
        },
        'pytest-args = ["--redis-url={valkey.url}"]\n[tool.testfleet.services.valkey]\n',
    )
    with (project / "pyproject.toml").open("a") as config:
        config.write('[tool.pytest.ini_options]\naddopts = "-vv"\n')
    plan = run_cli("plan", "-n", "2", cwd=project)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("2 tests in 1 units")


def test_xdist_in_addopts_is_switched_off_in_lanes(tmp_path: Path):
    project = make_suite(
        tmp_path,
        {
            "tests/test_w.py": (
                "import os\n"
                "def test_not_a_worker():\n"
                "    assert 'PYTEST_XDIST_WORKER' not in os.environ\n"
            ),
        },
    )
    with (project / "pyproject.toml").open("a") as config:
        config.write('[tool.pytest.ini_options]\naddopts = "-n 2"\n')
    result = run_cli("run", "-n", "2", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "-n 2 (pytest-xdist) from pytest's addopts is ignored inside lanes" in result.stderr
    assert result.stderr.count("is ignored inside lanes") == 1
    # --pdb is refused by xdist when -n is set: it must be off before xdist looks.
    pdb = run_cli("run", "-n", "1", "--", "--pdb", cwd=project)
    assert pdb.returncode == 0, pdb.stderr
    assert "incompatible" not in pdb.stderr


def test_fixture_plugin_loaded_by_the_suite_itself_is_not_registered_twice(tmp_path: Path):
    """A suite that lists testfleet's fixtures in `pytest_plugins` with plugin autoload off
    (as in an environment without testfleet's entry point) runs, fixture included."""
    project = make_suite(
        tmp_path,
        {
            "tests/conftest.py": 'pytest_plugins = ["testfleet.pytest_plugin"]\n',
            "tests/test_f.py": "def test_lane(testfleet): assert testfleet.lane == 1\n",
        },
    )
    result = run_cli("run", cwd=project, env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0, result.stderr


ORDER_SUITE = {
    # b depends on a having run first in the same process: correct under plain pytest only.
    "tests/test_a.py": "import builtins\ndef test_a(): builtins.SEEN = True\n",
    "tests/test_b.py": ("import builtins\ndef test_b(): assert getattr(builtins, 'SEEN', False)\n"),
}


def test_one_lane_keeps_pytests_order(tmp_path: Path):
    """With one lane tests run in pytest's order whatever the durations say; with more, a
    queue that reorders them says so once."""
    project = make_suite(tmp_path, ORDER_SUITE)
    durations = project / ".testfleet" / "durations.json"
    durations.parent.mkdir()
    # b measured slower: a duration-first queue runs it first, which breaks it.
    measured = {"tests/test_a.py::test_a": 0.1, "tests/test_b.py::test_b": 5.0}
    durations.write_text(json.dumps({"version": 1, "durations": measured}))
    one = run_cli("run", "-n", "1", cwd=project)
    assert one.returncode == 0, one.stderr
    assert "pytest's order" not in one.stderr
    durations.write_text(json.dumps({"version": 1, "durations": measured}))
    many = run_cli("run", "-n", "2", "--group-by", "module", cwd=project)
    assert many.stderr.count("do not run in pytest's order") == 1, many.stderr
    assert 'order = "pytest"' in many.stderr


def test_last_failed_works_across_runs(tmp_path: Path):
    project = make_suite(
        tmp_path,
        {
            "tests/test_a.py": (
                "import os\n"
                "def test_fails(): assert not os.environ.get('BROKEN', '1') == '1'\n"
                "def test_passes(): pass\n"
            ),
            "tests/test_b.py": "def test_other(): pass\n",
        },
    )
    first = run_cli("run", "-n", "2", cwd=project)
    assert first.returncode == 1
    second = run_cli("run", "-n", "2", "--", "--lf", cwd=project, env={"BROKEN": "0"})
    assert second.returncode == 0, second.stderr
    cases = junit_cases(project / ".testfleet" / "junit.xml")
    assert list(cases) == ["tests.test_a::test_fails"]


def test_a_lane_is_replaced_at_most_three_times(tmp_path: Path):
    """Every test crashes its lane: after three replacements the lane is not started again,
    and the tests nobody ran say why."""
    crashing = "".join(
        f"def test_crash_{i}(): os.kill(os.getpid(), signal.SIGSEGV)\n" for i in range(6)
    )
    project = make_suite(tmp_path, {"tests/test_c.py": "import os, signal\n" + crashing})
    result = run_cli("run", "-n", "1", cwd=project)
    assert result.returncode == 1, result.stderr
    assert "3 restart(s)" in result.stderr
    cases = junit_cases(project / ".testfleet" / "junit.xml")
    crashed = [c for c in cases.values() if isinstance(c.result[0], junitparser.Error)]
    not_run = [c for c in cases.values() if isinstance(c.result[0], junitparser.Skipped)]
    assert len(crashed) == 4  # the first lane and its three replacements
    assert len(not_run) == 2
    assert all(c.result[0].message.startswith("not run: ") for c in not_run)
