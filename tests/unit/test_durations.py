"""The durations store: merged, never clobbered; pytest-split's file is read too."""

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from testfleet import durations
from testfleet.errors import ConfigError
from testfleet.plan import plan


def test_merge_keeps_other_tests(tmp_path: Path):
    """A merge updates the measured tests and keeps every other test's entry."""
    store = tmp_path / ".testfleet" / "durations.json"
    durations.merge(store, {"a::t": 1.0, "b::t": 2.0})
    durations.merge(store, {"b::t": 3.0, "c::t": 0.5})
    assert durations.load(store, tmp_path) == {"a::t": 1.0, "b::t": 3.0, "c::t": 0.5}
    # No temp file left; the lock file stays, as removing it would race with a waiting merge.
    assert sorted(p.name for p in store.parent.iterdir()) == [
        ".durations.json.lock",
        "durations.json",
    ]


def test_pytest_split_file_is_read_under_ours(tmp_path: Path):
    """pytest-split's `.test_durations` fills in what our store lacks; ours wins on overlap."""
    (tmp_path / ".test_durations").write_text(json.dumps({"a::t": 9.0, "b::t": 4.0}))
    store = tmp_path / "d.json"
    durations.merge(store, {"a::t": 1.0})
    assert durations.load(store, tmp_path) == {"a::t": 1.0, "b::t": 4.0}


def test_broken_file_names_the_fix(tmp_path: Path):
    """An unreadable store is a config error that names the file and says to delete it."""
    store = tmp_path / "d.json"
    store.write_text("{not json")
    with pytest.raises(ConfigError, match=r"not a readable durations file .*; delete it"):
        durations.load(store, tmp_path)


# Each worker says it is ready, waits until the test closes its stdin (so all start at once),
# then merges its entries one call at a time: many read-modify-write cycles to interleave.
MERGER = """
import sys
from pathlib import Path
from testfleet import durations

worker, store = sys.argv[1], Path(sys.argv[2])
print("ready", flush=True)
sys.stdin.read()
for i in range(20):
    durations.merge(store, {f"tests/w{worker}.py::test_{i}": 0.5})
"""


def test_concurrent_merges_from_processes_lose_nothing(tmp_path: Path):
    """Eight processes merging 20 entries each into one store at the same time leave all
    160 entries in it: the read-modify-write is locked."""
    store = tmp_path / "durations.json"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", MERGER, str(n), str(store)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "ready\n"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.close()
    assert [worker.wait(timeout=60) for worker in workers] == [0] * 8
    for worker in workers:
        assert worker.stdout is not None
        worker.stdout.close()
    assert len(durations.load(store, tmp_path)) == 160
    assert sorted(p.name for p in tmp_path.iterdir()) == [".durations.json.lock", "durations.json"]


def test_concurrent_merges_from_threads_lose_nothing(tmp_path: Path):
    """Eight threads of one process merging at once neither lose entries nor trip over
    each other's temp file."""
    store = tmp_path / "durations.json"
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def merge(worker: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(20):
                durations.merge(store, {f"tests/w{worker}.py::test_{i}": 0.5})
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=merge, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(durations.load(store, tmp_path)) == 160


POISON = {
    "x::nan": float("nan"),
    "x::inf": float("inf"),
    "x::neg": -1.0,
    "x::huge": 1e308,
    "x::day": 86_401.0,
}


def strict_load(path: Path) -> object:
    """JSON as the standard allows it: NaN and Infinity are not numbers there."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} has {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("ours", [True, False], ids=["ours", "pytest-split"])
def test_load_leaves_out_unusable_durations_with_a_note(
    tmp_path: Path, ours: bool, capsys: pytest.CaptureFixture[str]
):
    """NaN, infinite, negative, absurd (over a day), huge integers, booleans and words are
    left out of planning, with one note naming the file; the usable entries are kept."""
    entries = (
        '{"x::nan": NaN, "x::inf": Infinity, "x::neg": -1, "x::huge": 1e308,'
        ' "x::big": ' + "9" * 400 + ', "x::bool": true, "x::word": "1", "x::ok": 2.5}'
    )
    store = tmp_path / "d.json"
    path = store if ours else tmp_path / ".test_durations"
    path.write_text('{"version": 1, "durations": ' + entries + "}" if ours else entries)
    assert durations.load(store, tmp_path) == {"x::ok": 2.5}
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"testfleet: {path}: left out 7 unusable duration(s) (e.g. x::")
    durations.load(store, tmp_path)
    assert capsys.readouterr().err == "", "the note is said once a process"


def test_merge_never_writes_nan_or_absurd_durations(tmp_path: Path):
    """Neither what a run measured nor what the file held is written when it is not a
    plausible duration; the file stays standard JSON."""
    store = tmp_path / "durations.json"
    store.write_text('{"version": 1, "durations": {"old::nan": NaN, "old::ok": 1.0}}')
    durations.merge(store, {**POISON, "x::ok": 0.25})
    assert strict_load(store) == {"version": 1, "durations": {"old::ok": 1.0, "x::ok": 0.25}}


@pytest.mark.parametrize("text", ["[1, 2]", '"x"', '{"durations": [1]}', "{}"])
def test_a_file_that_is_not_a_durations_file_is_refused(tmp_path: Path, text: str):
    """Some other JSON file named as the durations file is refused in one line (and so is
    never overwritten), as a file that is not JSON is."""
    store = tmp_path / "d.json"
    store.write_text(text)
    with pytest.raises(ConfigError, match=r"d\.json: not a durations file \(.*\); delete it"):
        durations.load(store, tmp_path)
    with pytest.raises(ConfigError, match="not a durations file"):
        durations.merge(store, {"a::t": 1.0})
    assert store.read_text() == text


def test_a_day_is_the_bound(tmp_path: Path):
    """A test of a day is plausible; a second more is not."""
    assert durations.usable(86_400.0)
    assert not durations.usable(86_400.5)
    assert durations.usable(0)
    assert not durations.usable(True)


def test_a_poisoned_file_still_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """What `plan` and `run --shard` compute from a file with NaN, Infinity and 1e308 in it
    is a split of finite estimates, the good entries used and the bad ones unknown."""
    store = tmp_path / "d.json"
    store.write_text(
        '{"version": 1, "durations": {"tests/a.py::t": Infinity, "tests/b.py::t": 1e308,'
        ' "tests/c.py::t": NaN, "tests/d.py::t": 2.0}}'
    )
    ids = [f"tests/{m}.py::t" for m in "abcd"]
    result = plan(ids, durations.load(store, tmp_path), 2, "module")
    assert all(math.isfinite(lane.estimate) for lane in result.lanes)
    assert result.estimates.unknown == 3
    assert result.makespan == 4.0
    assert "left out 3 unusable duration(s)" in capsys.readouterr().err
