"""`testfleet prune` removes the kept containers (`reuse = true`) of the project it runs in,
and every project's with --all: a second checkout's tests, idle between two runs, keep theirs.
The engine is a stand-in here (tests/docker has the real one)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testfleet.backends.docker_engine import (
    LABEL_PROJECT,
    LABEL_REUSE,
    hold_slot,
    host_key,
    kept_labels,
    prune_reused,
    reuse_dir,
)
from testfleet.cli import main
from testfleet.commands.prune import NO_PROJECT


@dataclass
class Kept:
    name: str
    labels: dict[str, str]
    removed: bool = False

    def remove(self, force: bool, v: bool) -> None:
        assert force
        assert v
        self.removed = True


@dataclass
class Engine:
    """What prune_reused asks of docker-py's client: containers by label, and close."""

    kept: list[Kept] = field(default_factory=list)
    closed: bool = False

    @property
    def containers(self) -> Engine:
        return self

    def list(self, all: bool, filters: dict[str, Any]) -> list[Kept]:
        assert all
        wanted = filters["label"]
        return [c for c in self.kept if not c.removed and all_match(c.labels, wanted)]

    def close(self) -> None:
        self.closed = True


def all_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """Docker's label filter: `key` is present, `key=value` is equal."""
    for one in wanted:
        key, has_value, value = one.partition("=")
        if key not in labels or (has_value and labels[key] != value):
            return False
    return True


@pytest.fixture
def keys() -> Iterator[list[str]]:
    """Description keys of the test's own; their slot lock files are removed after it."""
    made: list[str] = []
    yield made
    for key in made:
        for lock in reuse_dir().glob(f"{key}-*.lock"):
            lock.unlink()


def kept(keys: list[str], project: Path | None, slot: int = 0) -> Kept:
    key = secrets.token_hex(8)
    keys.append(key)
    labels = kept_labels(key, project or Path("/unused"))
    if project is None:  # kept by a testfleet before containers named their project
        del labels[LABEL_PROJECT]
    return Kept(f"testfleet-reuse-{os.getuid()}-{key}-{slot}", labels)


def test_prune_of_a_project_leaves_every_other_projects(tmp_path: Path, keys: list[str]):
    ours, theirs, older = kept(keys, tmp_path / "a"), kept(keys, tmp_path / "b"), kept(keys, None)
    engine = Engine([ours, theirs, older])
    assert prune_reused(tmp_path / "a", client=engine) == [ours.name]
    assert [c.removed for c in (ours, theirs, older)] == [True, False, False]
    assert not engine.closed  # the caller's client is the caller's to close


def test_prune_of_every_project_takes_all_of_this_users_on_this_machine(
    tmp_path: Path, keys: list[str]
):
    ours, theirs, older = kept(keys, tmp_path / "a"), kept(keys, tmp_path / "b"), kept(keys, None)
    elsewhere = kept(keys, tmp_path / "a")
    elsewhere.labels = {**elsewhere.labels, "testfleet.host": f"not-{host_key()}"}
    engine = Engine([ours, theirs, older, elsewhere])
    assert sorted(prune_reused(None, client=engine)) == sorted([ours.name, theirs.name, older.name])
    assert not elsewhere.removed  # another machine sharing the engine prunes its own


def test_a_kept_container_a_run_holds_stays(tmp_path: Path, keys: list[str]):
    held = kept(keys, tmp_path)
    fd = hold_slot(reuse_dir(), held.labels[LABEL_REUSE], 0)
    assert fd is not None
    try:
        assert prune_reused(tmp_path, client=Engine([held])) == []
        assert not held.removed
    finally:
        os.close(fd)


def test_no_project_here_prunes_no_kept_container(
    tmp_path: Path, own_run_base: Path, capsys: pytest.CaptureFixture[str]
):
    """Outside a project, pruning every project's kept containers takes --all; the engine is
    not even asked. Gone runs are still looked for."""
    assert not any((p / "pyproject.toml").exists() for p in (tmp_path, *tmp_path.parents))
    assert main(["-C", str(tmp_path), "prune"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == (
        f"{NO_PROJECT}; removed 0 directories of gone runs under {own_run_base.resolve()}"
    )


def test_prune_all_is_a_flag_of_prune(
    tmp_path: Path, own_run_base: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
):
    """--all with no engine answering: said as skipped, exit 0, like prune alone."""
    host = f"unix://{tmp_path}/no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    assert main(["-C", str(tmp_path), "prune", "--all"]) == 0
    assert capsys.readouterr().out.startswith(
        f"kept containers: skipped, no Docker engine answers at {host}"
    )
