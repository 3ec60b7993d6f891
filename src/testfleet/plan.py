"""Planning: tests grouped into units that keep fixture scopes together, estimated from
measured durations, queued slowest first. Pure and deterministic: same input, same plan."""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

GroupBy = Literal["module", "class", "test"]
# With nothing measured at all, a test is assumed to take this long.
DEFAULT_ESTIMATE = 0.5


@dataclass(frozen=True)
class Unit:
    """Tests that run together in one lane, in collection order."""

    key: str
    nodeids: tuple[str, ...]
    estimate: float


@dataclass(frozen=True)
class Estimates:
    durations: dict[str, float]  # every collected test: measured or estimated
    unknown: int  # how many had no measurement
    per_unknown: float  # what each of those was estimated at


@dataclass(frozen=True)
class LanePlan:
    lane: int
    units: tuple[Unit, ...]

    @property
    def estimate(self) -> float:
        return sum(u.estimate for u in self.units)


@dataclass(frozen=True)
class Plan:
    lanes: tuple[LanePlan, ...]
    estimates: Estimates

    @property
    def makespan(self) -> float:
        return max((lane.estimate for lane in self.lanes), default=0.0)


def unit_key(nodeid: str, group_by: GroupBy) -> str:
    """The unit a test belongs to: its module, its class (or module), or itself."""
    if group_by == "test":
        return nodeid
    path, _, rest = nodeid.partition("::")
    if group_by == "module" or not rest:
        return path
    parts = rest.split("::")
    # A class is any container above the test function; parametrization is in the last part.
    return "::".join([path, *parts[:-1]]) if len(parts) > 1 else path


def estimate(nodeids: Sequence[str], measured: Mapping[str, float]) -> Estimates:
    """Measured durations where known; the median of the known ones for the rest."""
    known = [measured[n] for n in nodeids if n in measured]
    per_unknown = statistics.median(known) if known else DEFAULT_ESTIMATE
    durations = {n: measured.get(n, per_unknown) for n in nodeids}
    return Estimates(durations, len(nodeids) - len(known), per_unknown)


def make_units(
    nodeids: Sequence[str], estimates: Estimates, group_by: GroupBy, *, keep_order: bool = False
) -> list[Unit]:
    """Units in queue order: slowest first, ties broken by key so every machine agrees; or,
    with `keep_order`, in collection order (pytest's own), for suites whose tests depend on
    running in it."""
    grouped: dict[str, list[str]] = {}
    for nodeid in nodeids:
        grouped.setdefault(unit_key(nodeid, group_by), []).append(nodeid)
    units = [
        Unit(key, tuple(ids), sum(estimates.durations[i] for i in ids))
        for key, ids in grouped.items()
    ]
    if keep_order:
        return units
    return sorted(units, key=lambda u: (-u.estimate, u.key))


def assign(units: Sequence[Unit], lanes: int) -> tuple[LanePlan, ...]:
    """What the queue does, simulated: each unit, slowest first, goes to the lane that frees
    up first (longest-processing-time scheduling; lowest lane number on ties)."""
    heap = [(0.0, lane) for lane in range(1, lanes + 1)]
    taken: dict[int, list[Unit]] = {lane: [] for lane in range(1, lanes + 1)}
    for unit in units:
        load, lane = heapq.heappop(heap)
        taken[lane].append(unit)
        heapq.heappush(heap, (load + unit.estimate, lane))
    return tuple(LanePlan(lane, tuple(us)) for lane, us in taken.items())


def keeps_order(order: str, *, lanes: int, sharded: bool) -> bool:
    """Whether units go out in pytest's order: asked for, or (auto) with one lane. Shards on
    machines with different core counts must still split alike, so the order of a shard never
    depends on how many lanes this machine runs."""
    return order == "pytest" or (order == "auto" and lanes == 1 and not sharded)


def plan(
    nodeids: Sequence[str],
    measured: Mapping[str, float],
    lanes: int,
    group_by: GroupBy,
    *,
    keep_order: bool = False,
    shard: tuple[int, int] | None = None,
) -> Plan:
    """The lanes' share of the suite (of one CI shard's share, with `shard`), as the queue
    will hand it out."""
    estimates = estimate(nodeids, measured)
    units = make_units(nodeids, estimates, group_by, keep_order=keep_order)
    if shard is not None:
        units = list(shard_of_units(units, nodeids, shard, keep_order=keep_order))
    return Plan(assign(units, lanes), estimates)


def ideal_bound(durations: Sequence[float], lanes: int) -> float:
    """No schedule beats this: the work spread evenly, or the longest test alone."""
    return max(sum(durations) / lanes, max(durations, default=0.0))


@dataclass(frozen=True)
class Work:
    """What a group's lanes run: its units in queue order, and the tests they hold (a shard's
    share of the collection, or all of it)."""

    units: tuple[Unit, ...]
    unknown_durations: int = 0
    per_unknown: float = 0.0
    notice: str | None = None  # said once, e.g. that the queue changes pytest's order

    @property
    def selected(self) -> tuple[str, ...]:
        return tuple(nodeid for unit in self.units for nodeid in unit.nodeids)


# A group's label (its Python) and its collected test ids -> the work its lanes do.
WorkSource = Callable[[str, Sequence[str]], Work]


def shard_units(units: Sequence[Unit], shard: int, shards: int) -> tuple[Unit, ...]:
    """Shard `shard` of `shards` (1-based): the units the lane-balancing schedule gives it.
    Every machine computes the same split from the same collection and durations."""
    return assign(units, shards)[shard - 1].units


def shard_of_units(
    units: Sequence[Unit], nodeids: Sequence[str], shard: tuple[int, int], *, keep_order: bool
) -> tuple[Unit, ...]:
    """One shard's units, in queue order (in file order when `keep_order`)."""
    mine = shard_units(units, *shard)
    if not keep_order:
        return mine
    position = {nodeid: i for i, nodeid in enumerate(nodeids)}
    return tuple(sorted(mine, key=lambda u: position[u.nodeids[0]]))


def work_source(
    measured: Mapping[str, float],
    group_by: GroupBy,
    *,
    keep_order: bool,
    lanes: int,
    shard: tuple[int, int] | None = None,
    first: frozenset[str] = frozenset(),
) -> WorkSource:
    """All collected tests (or one shard's share), queued slowest first or in file order;
    units holding a test of `first` (pytest's --ff: the last failures) before the others."""

    def plan_group(label: str, nodeids: Sequence[str]) -> Work:
        estimates = estimate(nodeids, measured)
        units: Sequence[Unit] = make_units(nodeids, estimates, group_by, keep_order=keep_order)
        notice = None
        if not keep_order and [u.key for u in units] != [
            u.key for u in make_units(nodeids, estimates, group_by, keep_order=True)
        ]:
            notice = (
                f"{lanes} lane(s) take the slowest {group_by}s first, so tests do not run in"
                ' pytest\'s order; order = "pytest" hands them out in file order'
            )
        if shard is not None:
            units = shard_of_units(units, nodeids, shard, keep_order=keep_order)
        if first:
            units = sorted(units, key=lambda u: not first.intersection(u.nodeids))
        return Work(tuple(units), estimates.unknown, estimates.per_unknown, notice)

    return plan_group
