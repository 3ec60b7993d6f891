"""`testfleet plan`: collect the suite (without services) and show how it would be split:
this machine's lanes (of one CI shard's share with `--shard I/M`), with estimated times."""

from __future__ import annotations

import argparse

from testfleet import durations
from testfleet.commands import Call
from testfleet.commands.common import project_for
from testfleet.config_rules import check_lanes, namespace_hint_for
from testfleet.console import say
from testfleet.errors import ExitCode
from testfleet.lanes.collection import collect
from testfleet.lanes.count import resolve_lanes
from testfleet.options import PLAN, add_options
from testfleet.plan import Plan, ideal_bound, keeps_order, plan
from testfleet.preflight import check_paths
from testfleet.project import Project
from testfleet.run_plan import shard_of
from testfleet.venvs import prepare_targets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, PLAN)


def main(call: Call) -> int:
    project = project_for(call, PLAN)
    check_paths(project, PLAN)
    lanes = resolve_lanes(project.config)
    # Every Python version of the matrix runs its own lanes on the one stack.
    hint = namespace_hint_for(project.config, project.sources, project.table)
    check_lanes(project.config, lanes * project.config.versions, namespace_hint=hint)
    nodeids = collect_suite(project)
    show(project, nodeids, lanes, split(project, nodeids, lanes))
    return ExitCode.OK


def collect_suite(project: Project) -> list[str]:
    """With a matrix, the first version's environment collects (made or reused as for run)."""
    matrix = bool(project.config.matrix)
    return collect(project, prepare_targets(project, say=say)[0].python if matrix else None)


def split(project: Project, nodeids: list[str], lanes: int) -> Plan:
    """The split `run` would make: the same units, shard and order."""
    config = project.config
    shard = shard_of(config.shard)
    measured = durations.load(project.path(config.durations), project.root)
    keep_order = keeps_order(config.order, lanes=lanes, sharded=shard is not None)
    return plan(nodeids, measured, lanes, config.group_by, keep_order=keep_order, shard=shard)


def show(project: Project, nodeids: list[str], lanes: int, result: Plan) -> None:
    config = project.config
    est = result.estimates
    mine = [n for lane in result.lanes for unit in lane.units for n in unit.nodeids]
    units = sum(len(lane.units) for lane in result.lanes)
    tests = (
        f"{len(mine)} tests"
        if config.shard is None
        else (f"shard {config.shard}: {len(mine)} of {len(nodeids)} tests")
    )
    if not mine:
        # Nothing to split: an estimate of nothing (or of other shards' tests) means nothing.
        why = "pytest collected no test to run" if not nodeids else "the other shards run them all"
        print(f"{tests}: {why}, so there is nothing to split and no estimate")
        return
    estimated = f", estimated at {est.per_unknown:.2f} s each" if est.unknown else ""
    print(
        f"{tests} in {units} units (group-by {config.group_by}) on {lanes} lane(s);"
        f" {est.unknown} without a measured duration{estimated}"
    )
    for lane in result.lanes:
        print(f"lane {lane.lane}: {lane.estimate:.2f} s estimated, {len(lane.units)} unit(s)")
        for unit in lane.units:
            print(f"    {unit.estimate:8.2f} s  {unit.key} ({len(unit.nodeids)} tests)")
    ideal = ideal_bound([est.durations[n] for n in mine], lanes)
    print(
        f"estimated wall {result.makespan:.2f} s; ideal bound {ideal:.2f} s"
        f" (= max(total / {lanes}, longest test))"
    )
