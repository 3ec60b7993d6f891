"""What a run is made of before anything starts: its Python targets (environments made or
reused), their lanes, and the work source each group's lanes take their units from."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from testfleet import durations, pytest_cache
from testfleet.console import say
from testfleet.plan import Work, WorkSource, keeps_order, work_source
from testfleet.project import Project
from testfleet.rundir import RunDir
from testfleet.venvs import PythonTarget, prepare_targets


@dataclass(frozen=True)
class RunPlan:
    targets: list[PythonTarget]
    label_of: dict[str, str]  # target label -> group label ("" without a matrix)
    versions: dict[str, str]  # group label -> full Python version
    lanes: int  # per target
    work: WorkSource
    measured: dict[str, float]
    shard: tuple[int, int] | None
    keep_order: bool

    @property
    def total_lanes(self) -> int:
        return self.lanes * len(self.targets)

    def target_of(self, lane: int) -> PythonTarget:
        return self.targets[(lane - 1) // self.lanes]

    def group_of(self, lane: int) -> str:
        return self.label_of[self.target_of(lane).label]

    def python_of(self, group: str) -> str:
        """The interpreter of a group (a Python version of the matrix, or "")."""
        return next(t.python for t in self.targets if self.label_of[t.label] == group)


def shard_of(text: str | None) -> tuple[int, int] | None:
    """`--shard 2/4` as (2, 4); the option's parser has checked it."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    return int(index), int(count)


def plan_run(project: Project, lanes: int, run_dir: RunDir | None = None) -> RunPlan:
    """The run's plan; the venvs of its Pythons made or reused, any uv that makes them
    recorded in `run_dir`, the directory of the run they are for."""
    config = project.config
    targets = prepare_targets(project, say=say, run_dir=run_dir)
    matrix = bool(config.matrix)
    label_of = {t.label: (t.label if matrix else "") for t in targets}
    measured = durations.load(project.path(config.durations), project.root)
    shard = shard_of(config.shard)
    keep_order = keeps_order(config.order, lanes=lanes, sharded=shard is not None)
    failed_first = {"--ff", "--failed-first"} & set(config.pytest_args)
    first = frozenset(pytest_cache.lastfailed(project) if failed_first else ())
    work = work_source(
        measured, config.group_by, keep_order=keep_order, lanes=lanes, shard=shard, first=first
    )
    if not keep_order and keeps_order(config.order, lanes=lanes, sharded=False):
        work = in_collection_order(work, first)
    versions = {label_of[t.label]: t.version for t in targets}
    return RunPlan(targets, label_of, versions, lanes, work, measured, shard, keep_order)


def in_collection_order(source: WorkSource, first: frozenset[str]) -> WorkSource:
    """A shard's units run in pytest's collection order where one lane keeps pytest's order
    (`order = "auto"`), as without shards. The split itself stays the one every machine
    computes whatever its lanes (slowest first, `keep_order` of the plan and the shard's
    fingerprint); only this machine's queue is reordered. pytest's --ff: the units holding
    the last failures still go first."""

    def plan_group(label: str, nodeids: Sequence[str]) -> Work:
        work = source(label, nodeids)
        position = {nodeid: i for i, nodeid in enumerate(nodeids)}
        units = sorted(
            work.units,
            key=lambda u: (not first.intersection(u.nodeids), position[u.nodeids[0]]),
        )
        # Its notice said the queue changes pytest's order: it no longer does.
        return dataclasses.replace(work, units=tuple(units), notice=None)

    return plan_group
