"""`testfleet run -n N` end to end: isolation, faults, Ctrl-C, merged reports, durations,
coverage. Each test checks the process table as well as the exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import junitparser
import pytest

from testfleet.rundir import process_start_ticks
from tests.helpers import EXAMPLE, alive, run_cli, wait_for, write_pyproject

pytestmark = pytest.mark.e2e

FAULTS = {
    "tests/test_a.py": (
        "import os, signal, time\n"
        "def test_ok1(): time.sleep(0.2)\n"
        "def test_crash(): os.kill(os.getpid(), signal.SIGSEGV)\n"
        "def test_after_crash(): pass\n"
    ),
    "tests/test_b.py": (
        "import os, time\n"
        "def test_hang():\n"
        "    open('hung.pid', 'w').write(str(os.getpid()))\n"
        "    time.sleep(100)\n"
        "def test_after_hang(): pass\n"
        "def test_fail(): assert 1 == 2, 'one is not two'\n"
    ),
    "tests/test_c.py": (
        "import pytest, time\n"
        "@pytest.mark.parametrize('i', range(4))\n"
        "def test_many(i): time.sleep(0.05)\n"
    ),
}


def make_suite(root: Path, files: dict[str, str], table: str = "") -> Path:
    write_pyproject(root, "[tool.testfleet]\n" + table)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def junit_cases(path: Path) -> dict[str, junitparser.TestCase]:
    cases = {}
    for suite in junitparser.JUnitXml.fromfile(str(path)):
        for case in suite:
            key = f"{case.classname}::{case.name}"
            assert key not in cases, f"{key} appears twice"
            cases[key] = case
    return cases


def test_example_passes_with_four_lanes(tmp_path: Path):
    junit = tmp_path / "junit.xml"
    result = run_cli("run", "-n", "4", "--junit-xml", str(junit), cwd=EXAMPLE)
    assert result.returncode == 0, result.stderr
    cases = junit_cases(junit)
    assert len(cases) == 36
    assert all(case.is_passed for case in cases.values())
    names = [s.name for s in junitparser.JUnitXml.fromfile(str(junit))]
    # A lane that starts late may find the queue empty: at most one suite per lane, unique.
    assert 2 <= len(names) == len(set(names)) <= 4
    assert all(name.startswith("pytest (lane ") for name in names)


def test_shared_stack_breaks_the_example_under_xdist(tmp_path: Path):
    """The same suite under plain `pytest -n 4` against one shared `testfleet up` stack:
    tests that are correct alone see each other's data. This is what lanes prevent."""
    up = subprocess.Popen(
        [sys.executable, "-m", "testfleet", "up", "--dotenv", str(tmp_path / "env")],
        cwd=EXAMPLE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        env = dict(os.environ)
        assert up.stdout is not None
        for line in up.stdout:
            key, _, value = line.removeprefix("export ").strip().partition("=")
            env[key] = value.strip("'")
            if key == "TESTFLEET_SERVICES":
                break
        shared = subprocess.run(
            [sys.executable, "-m", "pytest", "-n", "4", "-q", "-p", "no:cacheprovider"],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=30)
    assert shared.returncode == 1
    assert " failed" in shared.stdout.splitlines()[-1]


def test_timeout_and_crash_are_reported_and_the_rest_runs(tmp_path: Path):
    project = make_suite(tmp_path, FAULTS)
    junit = project / ".testfleet" / "junit.xml"
    result = run_cli("run", "-n", "2", "--test-timeout", "2", cwd=project, timeout=120)
    assert result.returncode == 1, result.stderr
    cases = junit_cases(junit)
    assert len(cases) == 10  # every collected test exactly once
    hang = cases["tests.test_b::test_hang"]
    assert hang.result[0].message == "timed out after 2 s"
    crash = cases["tests.test_a::test_crash"]
    assert isinstance(crash.result[0], junitparser.Error)
    assert "crashed (killed by SIGSEGV) while running this test" in crash.result[0].message
    for name in (
        "tests.test_a::test_after_crash",
        "tests.test_b::test_after_hang",
        "tests.test_a::test_ok1",
    ):
        assert cases[name].is_passed, name
    assert "one is not two" in cases["tests.test_b::test_fail"].result[0].message
    hung = int((project / "hung.pid").read_text())
    ticks = process_start_ticks(hung)
    assert ticks is None or alive([(hung, ticks)]) == []
    assert "FAILED tests/test_b.py::test_hang (lane" in result.stderr
    assert "1 restart(s)" in result.stderr


def test_interrupt_writes_reports_and_stops_everything(tmp_path: Path):
    project = make_suite(
        tmp_path,
        {
            "tests/test_fast.py": "def test_quick(): pass\n",
            "tests/test_slow.py": (
                "import os, subprocess, time\n"
                "def test_slow():\n"
                "    child = subprocess.Popen(['sleep', '300'])\n"
                "    open(f'pids-{os.getpid()}', 'w').write(f'{os.getpid()} {child.pid}')\n"
                "    time.sleep(300)\n"
            ),
            "tests/test_slow2.py": "import time\ndef test_slow2(): time.sleep(300)\n",
        },
        "[tool.testfleet.services.valkey]\n",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "testfleet", "run", "-n", "2"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: any(project.glob("pids-*")), what="the slow test to start")
    pid_file = next(project.glob("pids-*"))
    wait_for(lambda: len(pid_file.read_text().split()) == 2, what="pids written")
    pids = [(p, process_start_ticks(p) or 0) for p in map(int, pid_file.read_text().split())]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert alive(pids) == []
    cases = junit_cases(project / ".testfleet" / "junit.xml")
    assert len(cases) == 3
    assert cases["tests.test_fast::test_quick"].is_passed
    slow = cases["tests.test_slow::test_slow"].result[0]
    assert isinstance(slow, junitparser.Error)  # it ran, and was stopped: not "skipped"
    assert slow.message.startswith("interrupted while this test ran (after ")


def test_durations_are_measured_and_used(tmp_path: Path):
    project = make_suite(
        tmp_path,
        {
            "tests/test_x.py": "import time\ndef test_a(): time.sleep(0.3)\ndef test_b(): pass\n",
        },
    )
    first = run_cli("run", "-n", "2", cwd=project)
    assert first.returncode == 0, first.stderr
    assert "2 test(s) had no measured duration" in first.stderr
    stored = json.loads((project / ".testfleet" / "durations.json").read_text())["durations"]
    assert stored["tests/test_x.py::test_a"] >= 0.3
    second = run_cli("run", "-n", "2", cwd=project)
    assert "had no measured duration" not in second.stderr
    plan = run_cli("plan", "-n", "2", cwd=project)
    assert plan.returncode == 0, plan.stderr
    assert "0 without a measured duration" in plan.stdout


def test_coverage_combined_across_lanes_and_subprocesses(tmp_path: Path):
    project = make_suite(
        tmp_path,
        {
            "app.py": (
                "def used():\n    return 1\n\n"
                "def in_child():\n    return 2\n\n"
                "def unused():\n    return 3\n"
            ),
            "tests/test_one.py": "import app\ndef test_used(): assert app.used() == 1\n",
            "tests/test_two.py": (
                "import subprocess, sys\n"
                "def test_child():\n"
                "    subprocess.run([sys.executable, '-c', 'import app; app.in_child()'],"
                " check=True)\n"
            ),
        },
        "coverage-fail-under = 95\n[tool.coverage.run]\nsource = ['app']\n",
    )
    result = run_cli("run", "-n", "2", "--coverage", cwd=project)
    assert result.returncode == 1, result.stderr
    assert "under coverage-fail-under 95%" in result.stderr
    xml = (project / ".testfleet" / "coverage.xml").read_text()
    # used() and in_child() run (the second one only in a subprocess); unused() does not.
    assert 'line-rate="0.8333"' in xml
    assert (project / ".testfleet" / ".coverage").exists()


def test_collection_error_fails_the_run(tmp_path: Path):
    project = make_suite(
        tmp_path,
        {
            "tests/test_bad.py": "import nonexistent_module\n",
            "tests/test_ok.py": "def test_ok(): pass\n",
        },
    )
    result = run_cli("run", "-n", "2", cwd=project)
    assert result.returncode == 1
    assert "collecting tests/test_bad.py failed" in result.stderr


def test_bad_pytest_argument_is_a_usage_error(tmp_path: Path):
    project = make_suite(tmp_path, {"tests/test_ok.py": "def test_ok(): pass\n"})
    result = run_cli("run", "-n", "2", "--", "--no-such-option", cwd=project)
    assert result.returncode == 2
    assert "exited with code 4 before collecting tests" in result.stderr
    assert "Traceback" not in result.stderr


def test_pytest_args_and_env_are_expanded_per_lane(tmp_path: Path):
    """Suites that take their services as pytest options get each lane's own values."""
    project = make_suite(
        tmp_path,
        {
            "conftest.py": ("def pytest_addoption(parser):\n    parser.addoption('--redis-url')\n"),
            "tests/test_a.py": (
                "import os\n"
                "def test_sees_own_lane(request):\n"
                "    url = request.config.getoption('--redis-url')\n"
                "    assert url == os.environ['VALKEY_URL'] == os.environ['CACHE']\n"
                "    assert os.environ['LANE_NAME'] == 'lane-' + os.environ['TESTFLEET_LANE']\n"
                "    open(f'seen-{os.environ[\"TESTFLEET_LANE\"]}', 'w').write(url)\n"
            ),
            "tests/test_b.py": "from tests.test_a import test_sees_own_lane as test_b\n",
        },
        'pytest-args = ["--redis-url={valkey.url}"]\n'
        'env = { CACHE = "{valkey.url}", LANE_NAME = "lane-{lane}" }\n'
        "[tool.testfleet.services.valkey]\n",
    )
    (project / "tests" / "__init__.py").write_text("")
    result = run_cli("run", "-n", "2", "--group-by", "test", cwd=project)
    assert result.returncode == 0, result.stderr
    seen = {p.read_text() for p in project.glob("seen-*")}
    assert len(seen) == len(list(project.glob("seen-*"))) >= 1
