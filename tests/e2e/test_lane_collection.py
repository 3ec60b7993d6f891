"""Lanes that share one collection: a lane imports the test files it claims first and those of
the units it is handed, never the whole suite; module-level skips are skipped tests.

The first tests drive one lane's pytest with a small coordinator of their own (the protocol is
a line of JSON per message), so what the lane imports and when is deterministic; the others
run the real CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import junitparser
import pytest

from testfleet.protocol import LineReader, Message, receive, send
from tests.helpers import run_cli, write_pyproject

pytestmark = pytest.mark.e2e

# Each module writes `imported-<module>-<lane>-<pid>` when it is imported.
MARK = (
    "import os, pathlib\n"
    "pathlib.Path('imported-' + __name__.rsplit('.', 1)[-1] + '-'"
    " + os.environ.get('TESTFLEET_LANE', '0') + '-' + str(os.getpid())).touch()\n"
)
CONFTEST = (
    "import os, pathlib, pytest\n"
    "@pytest.fixture(scope='session', autouse=True)\n"
    "def once_per_lane():\n"
    "    with open(f'session-{os.getpid()}', 'a') as out:\n"
    "        out.write('x')\n"
    "def pytest_collection_modifyitems(items):\n"
    "    for item in items:\n"  # the docs' --runslow pattern: a hook that marks items
    "        if 'slow' in item.name:\n"
    "            item.add_marker(pytest.mark.skip(reason='slow'))\n"
)
MODULE = MARK + (
    "import pytest\n"
    "@pytest.fixture(scope='module')\n"
    "def per_module():\n"
    "    with open(f'module-{__name__}-{os.getpid()}', 'a') as out:\n"
    "        out.write('x')\n"
    "def test_one(per_module): pass\n"
    "def test_slow_two(per_module): pass\n"
    "class TestThree:\n"
    "    def test_three(self, per_module): pass\n"
)


LANE_PLUGINS = ("-p", "testfleet.worker.plugin", "-p", "no:cacheprovider")


def suite(root: Path, names: list[str], table: str = "") -> Path:
    write_pyproject(root, "[tool.testfleet]\n" + table)
    (root / "conftest.py").write_text(CONFTEST)
    (root / "tests").mkdir()
    for name in names:
        (root / "tests" / f"{name}.py").write_text(MODULE)
    return root


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix sockets need a short path. A lane a failed test left waiting is stopped."""
    folder = Path(tempfile.mkdtemp(prefix="tfc-", dir="/tmp"))
    yield folder
    for lane in Lane.started:
        if lane.process.poll() is None:
            lane.process.kill()
            lane.process.communicate()
    Lane.started.clear()
    shutil.rmtree(folder)


def imports(root: Path) -> dict[str, set[str]]:
    """module -> the lanes (lane-pid) that imported it."""
    found: dict[str, set[str]] = {}
    for path in root.glob("imported-*"):
        _, module, lane = path.name.split("-", 2)
        found.setdefault(module, set()).add(lane)
    return found


class Lane:
    """One lane's pytest, talking to this test as its coordinator."""

    started: ClassVar[list[Lane]] = []

    def __init__(self, root: Path, folder: Path, collection: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(folder / "q.sock"))
        self.server.listen(1)
        self.server.settimeout(60)
        env = {
            **os.environ,
            "TESTFLEET_QUEUE": str(folder / "q.sock"),
            "TESTFLEET_LANE": "2",
            "TESTFLEET_COLLECTION_DIR": str(collection),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", *LANE_PLUGINS],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        Lane.started.append(self)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(60)
        self.reader = LineReader()
        self.pending: list[Message] = []
        self.received: list[Message] = []

    def until(self, kind: str) -> Message:
        while True:
            message = receive(self.conn, self.reader, self.pending)
            assert message is not None, f"the lane ended before {kind}: {self.finish()}"
            self.received.append(message)
            if message["type"] == kind:
                return message

    def hand(self, *units: list[str]) -> None:
        for unit in units:
            self.until("next")
            send(self.conn, {"type": "unit", "nodeids": unit})
        self.until("next")
        send(self.conn, {"type": "done"})

    def finish(self) -> str:
        while (message := receive(self.conn, self.reader, self.pending)) is not None:
            self.received.append(message)
        output, _ = self.process.communicate(timeout=60)
        self.conn.close()
        self.server.close()
        return output

    def results(self) -> dict[str, Message]:
        return {m["nodeid"]: m for m in self.received if m["type"] == "result"}


def other_lane(collection: Path, files: dict[str, list[str]], skips: dict[str, object]) -> None:
    """This test's process as another lane: it claims `files` and publishes their tests."""
    from testfleet.worker.shared import SharedCollection

    other = SharedCollection(collection)
    for name in files:
        assert other.claim(name)
    other.publish(files, skips, {})


def test_a_lane_imports_a_file_another_lane_claimed_only_when_handed_its_tests(
    tmp_path: Path, short_dir: Path
):
    """The collection comes from the other lane's part; the file is imported when its unit
    arrives, with the suite's collection hooks applied; a module that skipped itself in the
    other lane is reported skipped here without being imported."""
    root = suite(tmp_path / "p", ["test_a", "test_b"])
    (root / "tests" / "test_c.py").write_text("raise RuntimeError('imported')\n")
    collection = short_dir / "collection"
    b = ["tests/test_b.py::test_one", "tests/test_b.py::test_slow_two"]
    b_class = ["tests/test_b.py::TestThree::test_three"]
    other_lane(
        collection,
        {"tests/test_b.py": [*b, *b_class], "tests/test_c.py": ["tests/test_c.py"]},
        {"tests/test_c.py": {"message": "no module named zzz", "text": "test_c.py:1: no zzz"}},
    )
    lane = Lane(root, short_dir, collection)
    collected = lane.until("collected")
    a = [
        "tests/test_a.py::test_one",
        "tests/test_a.py::test_slow_two",
        "tests/test_a.py::TestThree::test_three",
    ]
    assert collected["nodeids"] == [*a, *b, *b_class, "tests/test_c.py"]
    assert collected["files"] == ["tests/test_a.py"]
    assert set(imports(root)) == {"test_a"}
    lane.hand(b, ["tests/test_c.py"], a, b_class)
    output = lane.finish()
    assert lane.process.returncode == 0, output
    assert set(imports(root)) == {"test_a", "test_b"}
    results = lane.results()
    assert {n: r["outcome"] for n, r in results.items()} == {
        **{n: "passed" for n in [*a, *b, *b_class] if "slow" not in n},
        "tests/test_a.py::test_slow_two": "skipped",
        "tests/test_b.py::test_slow_two": "skipped",
        "tests/test_c.py": "skipped",
    }
    assert results["tests/test_c.py"]["message"] == "no module named zzz"
    # Session fixtures once in the lane; module fixtures once per module run together.
    assert [p.read_text() for p in root.glob("session-*")] == ["x"]
    assert sorted(p.read_text() for p in root.glob("module-*")) == ["x", "xx"]


def test_a_file_whose_claimer_died_is_collected_by_the_lane(tmp_path: Path, short_dir: Path):
    """A lane that claimed a file and died before publishing its tests does not stall the
    others: they collect that file themselves."""
    root = suite(tmp_path / "p", ["test_a", "test_b"])
    collection = short_dir / "collection"
    claim = (
        "import pathlib; from testfleet.worker.shared import SharedCollection;"
        f" SharedCollection(pathlib.Path({str(collection)!r})).claim('tests/test_b.py')"
    )
    subprocess.run([sys.executable, "-c", claim], check=True)  # claims it, then is gone
    lane = Lane(root, short_dir, collection)
    collected = lane.until("collected")
    assert [n for n in collected["nodeids"] if "test_b" in n] == [
        "tests/test_b.py::test_one",
        "tests/test_b.py::test_slow_two",
        "tests/test_b.py::TestThree::test_three",
    ]
    assert set(imports(root)) == {"test_a", "test_b"}
    lane.hand()
    lane.finish()


def test_lanes_import_only_what_they_claim_and_run(tmp_path: Path, own_run_base: Path):
    """Each module is imported in the lanes that run its tests and at most one other (the
    lane that collected it first): never in every lane. Module fixtures run once per module
    and lane, session fixtures once per lane process."""
    names = [f"test_m{i}" for i in range(9)]
    root = suite(tmp_path / "p", names)
    result = run_cli("run", "-n", "3", cwd=root)
    assert result.returncode == 0, result.stderr
    report = json.loads((root / ".testfleet" / "results.json").read_text())
    runners: dict[str, set[str]] = {}
    for entry in report["results"]:
        module = entry["nodeid"].split("::")[0].removeprefix("tests/").removesuffix(".py")
        runners.setdefault(module, set()).add(str(entry["lane"]))
    assert len(report["results"]) == 27
    for module, lanes in imports(root).items():
        importers = {lane.split("-")[0] for lane in lanes}
        assert len(lanes) == len(importers), f"{module} imported twice in one lane"
        assert len(importers - runners[module]) <= 1, (module, importers, runners[module])
    sessions = list(root.glob("session-*"))
    assert sessions
    assert all(p.read_text() == "x" for p in sessions)


def test_module_level_skips_are_skipped_tests(tmp_path: Path, own_run_base: Path):
    """`pytest.importorskip` and `pytest.skip(allow_module_level=True)` at import are skipped
    results named by their module, in the counts and the JUnit XML, as plain pytest has them."""
    root = suite(tmp_path / "p", ["test_a"])
    (root / "tests" / "test_imp.py").write_text(
        "import pytest\npytest.importorskip('no_such_module_zz')\ndef test_x(): pass\n"
    )
    (root / "tests" / "test_skip.py").write_text(
        "import pytest\npytest.skip('not here', allow_module_level=True)\n"
    )
    plain = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    # test_a's test_slow_two (skipped by the conftest) and the two modules.
    assert "2 passed, 3 skipped" in plain.stdout, plain.stdout
    result = run_cli("run", "-n", "2", cwd=root)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\b2 passed, 3 skipped\b", result.stderr), result.stderr[-2000:]
    cases = {
        case.name: case
        for suite_ in junitparser.JUnitXml.fromfile(str(root / ".testfleet" / "junit.xml"))
        for case in suite_
    }
    skipped = {name for name, case in cases.items() if case.is_skipped}
    assert {"tests/test_imp.py", "tests/test_skip.py"} <= skipped
    assert "no_such_module_zz" in cases["tests/test_imp.py"].result[0].message
    assert cases["tests/test_skip.py"].result[0].message == "not here"


def test_long_failure_output_keeps_start_and_end(tmp_path: Path, own_run_base: Path):
    """A failure's long output is cut in the JUnit XML and on the terminal with the cut
    marked, its first and last lines kept; the results file keeps it whole."""
    write_pyproject(tmp_path, "[tool.testfleet]\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_loud.py").write_text(
        "def test_loud():\n"
        "    for i in range(4000):\n"
        "        print(f'line {i:05d} ' + 'x' * 20)\n"
        "    assert False, 'loud failure'\n"
    )
    result = run_cli("run", "-n", "1", cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads((tmp_path / ".testfleet" / "results.json").read_text())
    (entry,) = report["results"]
    whole = entry["output"]
    assert whole.startswith("--- Captured stdout call ---\nline 00000 ")
    assert "line 03999 " in whole
    (case,) = [
        c
        for s in junitparser.JUnitXml.fromfile(str(tmp_path / ".testfleet" / "junit.xml"))
        for c in s
    ]
    shown = case.system_out
    assert re.search(
        r"\[\.\.\. \d+ characters cut; the whole is in \.testfleet/results\.json\]", shown
    )
    assert shown.startswith("--- Captured stdout call ---\nline 00000 ")
    assert "line 03999 " in shown
    assert len(shown) < 25_000
    # Neither part starts mid-line: the kept end begins with a whole line.
    after = shown.split("results.json]\n", 1)[1]
    assert after.startswith("line ")
    assert "characters cut; the whole is in .testfleet/results.json" in result.stderr


def test_selection_works_on_a_shared_collection(tmp_path: Path, own_run_base: Path):
    """-k and -m deselect in each lane's part as pytest would in the whole; --lf, whose hook
    needs the whole suite, still runs exactly the last failures."""
    root = suite(tmp_path / "p", [f"test_m{i}" for i in range(4)])
    with (root / "pyproject.toml").open("a") as out:
        out.write('[tool.pytest.ini_options]\nmarkers = ["red"]\n')
    (root / "tests" / "test_red.py").write_text(
        "import pytest\n@pytest.mark.red\ndef test_red(): assert False\ndef test_plain(): pass\n"
    )

    def ran(*args: str) -> dict[str, str]:
        result = run_cli("run", "-n", "2", *args, cwd=root)
        assert "Traceback" not in result.stderr, result.stderr
        report = json.loads((root / ".testfleet" / "results.json").read_text())
        return {r["nodeid"]: r["outcome"] for r in report["results"]}

    assert ran("-k", "one") == {f"tests/test_m{i}.py::test_one": "passed" for i in range(4)}
    named = ["tests/test_m1.py::test_one", "tests/test_m2.py::TestThree::test_three"]
    assert ran(*named) == dict.fromkeys(named, "passed")
    assert ran("-m", "red") == {"tests/test_red.py::test_red": "failed"}
    assert len(ran()) == 14
    assert ran("--lf") == {"tests/test_red.py::test_red": "failed"}
