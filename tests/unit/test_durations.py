"""The durations store: merged, never clobbered; pytest-split's file is read too."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from testfleet import durations
from testfleet.errors import ConfigError


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
