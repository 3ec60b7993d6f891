"""One collection shared by a group's lanes: each test file is imported by the lane that
claims it first (a file created with O_EXCL in the group's collection directory), and every
lane reads the rest of the collection from the parts the other lanes write. So each lane
imports about its share of the suite instead of all of it, and reports the whole collection
to the coordinator as before. A file another lane claimed is imported here only when a unit
of it is handed to this lane (or when its claimer died before writing its part).

Used only in lanes (worker/plugin.py); standard library and pytest only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

DIR_VARIABLE = "TESTFLEET_COLLECTION_DIR"
POLL_SECONDS = 0.02
# pytest options whose collection hooks need the whole suite at once (--lf deselects by what
# failed anywhere, --nf orders by what is new anywhere, stepwise resumes at one test): with
# them, every lane collects everything, as before.
WHOLE_SUITE_OPTIONS = ("lf", "nf", "stepwise", "stepwise_skip")


def wanted(config: pytest.Config) -> Path | None:
    """The group's collection directory, when this lane shares its collection."""
    folder = os.environ.get(DIR_VARIABLE)
    if not folder or any(getattr(config.option, name, False) for name in WHOLE_SUITE_OPTIONS):
        return None
    return Path(folder)


def file_key(nodeid: str) -> str:
    """The file part of a node id: the key of a test file (a Python module's node id)."""
    return nodeid.split("::", 1)[0]


def _file_of(item: pytest.Item) -> str:
    for node in item.listchain():
        if isinstance(node, pytest.File):
            return node.nodeid
    return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_atomic(path: Path, data: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(data)
    os.replace(temporary, path)


class SharedCollection:
    def __init__(self, folder: Path) -> None:
        self.claims = folder / "claims"
        self.parts = folder / "parts"
        # Private, as everything in the run's directory: the suite's test ids are the
        # project's business (and the run directory's test checks every mode in it).
        for made in (folder, self.claims, self.parts):
            made.mkdir(mode=0o700, exist_ok=True)
        self.order: list[str] = []  # every test file, in pytest's collection order
        self.imported: set[str] = set()  # the files collected in this lane
        self.others: dict[str, pytest.Collector] = {}  # files left to their claimers
        self.seconds: dict[str, float] = {}  # how long collecting each of ours took
        self._let_through: set[str] = set()
        self._read: dict[int, dict[str, Any]] = {}  # the parts read, by their lane's pid
        self._claimers: dict[str, int] = {}  # claims read (a claim, once made, never changes)
        # While pytest resolves its arguments: a file it imports then (a node id argument,
        # `tests/test_a.py::test_x`) is needed by every lane to find the test in it.
        self.resolving = True

    # -- while pytest collects ------------------------------------------------------------

    def take(self, collector: pytest.Collector) -> bool:
        """Whether this lane collects `collector` (a test file) now: it claimed it, or a unit
        of it was handed here. Else it stays uncollected, kept for later."""
        nodeid = collector.nodeid
        if nodeid in self._let_through or nodeid in self.imported:
            return True
        self.order.append(nodeid)
        if self.resolving or self.claim(nodeid):
            self.imported.add(nodeid)
            return True
        self.others[nodeid] = collector
        return False

    def _claim_path(self, nodeid: str) -> Path:
        return self.claims / hashlib.sha256(nodeid.encode()).hexdigest()[:32]

    def claim(self, nodeid: str) -> bool:
        """The file is ours when we are first: the claim (our pid) appears whole or not at
        all, since it is linked into place, which fails when another lane's is there."""
        own = self.claims / f".{os.getpid()}"
        if not own.exists():
            _write_atomic(own, str(os.getpid()))
        try:
            os.link(own, self._claim_path(nodeid))
        except FileExistsError:
            return False
        return True

    # -- after our share is collected -----------------------------------------------------

    def publish(
        self, files: dict[str, list[str]], skips: dict[str, Any], errors: dict[str, str]
    ) -> None:
        """Our part: the tests of each file we collected (after pytest's deselection; a module
        that skipped itself is its own node id), why those skipped, and collection errors."""
        part = {"files": files, "skips": skips, "errors": errors}
        _write_atomic(self.parts / f"{os.getpid()}.json", json.dumps(part))

    def _part(self, nodeid: str, absent: set[int]) -> tuple[dict[str, Any] | None, int | None]:
        """The part holding `nodeid`'s tests and its claimer's pid (None: not written yet).
        `absent`: claimers whose part was not there earlier in this round, not read again."""
        pid = self._claimers.get(nodeid)
        if pid is None:
            try:
                pid = int(self._claim_path(nodeid).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None, None
            self._claimers[nodeid] = pid
        if pid not in self._read:
            if pid in absent:
                return None, pid
            try:
                self._read[pid] = json.loads((self.parts / f"{pid}.json").read_text("utf-8"))
            except (OSError, ValueError):
                absent.add(pid)
                return None, pid
        return self._read[pid], pid

    def gather(self, collect: Callable[[str], object]) -> dict[str, dict[str, Any]]:
        """Every other file's part, waiting for lanes still collecting theirs; a file whose
        claimer died first is collected here (`collect(nodeid)`). Returns the parts by file."""
        found: dict[str, dict[str, Any]] = {}
        pending = [f for f in self.order if f not in self.imported]
        while pending:
            waiting = []
            absent: set[int] = set()  # each missing part is looked for once a round
            for nodeid in pending:
                part, pid = self._part(nodeid, absent)
                if part is not None and nodeid in part["files"]:
                    found[nodeid] = part
                elif pid is not None and not _alive(pid):
                    collect(nodeid)
                else:
                    waiting.append(nodeid)
            pending = waiting
            if pending:
                time.sleep(POLL_SECONDS)
        return found

    def collect(self, session: pytest.Session, nodeid: str) -> list[pytest.Item]:
        """A file another lane claimed, collected here (its tests were handed to us, or its
        claimer is gone): pytest's own collection of that one file, then its hooks."""
        collector = self.others.pop(nodeid, None)
        if collector is None:
            return []
        self._let_through.add(nodeid)
        started = time.perf_counter()
        items = list(session.genitems(collector))
        session.config.hook.pytest_collection_modifyitems(
            session=session, config=session.config, items=items
        )
        self.seconds[nodeid] = time.perf_counter() - started
        self.imported.add(nodeid)
        session.items.extend(items)
        return items


def by_file(
    items: Iterable[pytest.Item], skips: Iterable[str], files: Iterable[str]
) -> dict[str, list[str]]:
    """Node ids by their test file (every one of `files`, if only with none), in order; a
    module that skipped itself is its own node id. Key "": what is under no test file."""
    grouped: dict[str, list[str]] = {f: [] for f in files}
    for item in items:
        grouped.setdefault(_file_of(item), []).append(item.nodeid)
    for nodeid in skips:
        key = file_key(nodeid)
        grouped.setdefault(key if key in grouped else "", []).append(nodeid)
    return grouped


def merged(
    order: list[str], own: dict[str, list[str]], parts: dict[str, dict[str, Any]]
) -> list[str]:
    """The whole collection as every lane reports it: node ids under no test file first,
    then each file's, in pytest's file order, from this lane (`own`) or from the part of
    the lane that collected it."""
    nodeids = list(own.get("", []))
    for nodeid in order:
        if nodeid in own:
            nodeids.extend(own[nodeid])
        elif nodeid in parts:
            nodeids.extend(parts[nodeid]["files"][nodeid])
    return nodeids
