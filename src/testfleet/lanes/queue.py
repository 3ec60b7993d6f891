"""The lanes' work queue: one per group (a Python version of the matrix), planned from the
group's collection, handed out a unit at a time as lanes ask. What a lane held and did not
finish goes back first in line; a lane is replaced at most a few times; after a stop nothing
more is handed out. Pure: no processes, no sockets; the coordinator drives it."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from testfleet.plan import Unit, Work, WorkSource

MAX_RESTARTS = 3


@dataclass
class GroupQueue:
    """One group's collection, its planned work and the units not handed out yet."""

    nodeids: list[str] | None = None  # collected by its first lane
    work: Work | None = None
    units: deque[Unit] = field(default_factory=deque)


class Mismatch(Exception):
    """A lane collected other tests than its group's first lane: the message says how."""


class LaneQueue:
    def __init__(
        self,
        work: WorkSource,
        group_of: Mapping[int, str],
        *,
        max_restarts: int = MAX_RESTARTS,
    ) -> None:
        self._work = work
        self._group_of = dict(group_of)
        self._max_restarts = max_restarts
        self.groups = {group: GroupQueue() for group in self._group_of.values()}
        self._held: dict[int, list[str]] = {lane: [] for lane in self._group_of}
        self.restarts: dict[int, int] = {lane: 0 for lane in self._group_of}
        self.stopping: str | None = None  # why nothing more is handed out (-x, --maxfail)
        self._halted = False

    def collected(self, lane: int, nodeids: Sequence[str]) -> Work | None:
        """A lane's collection. The first of its group plans the group's work (returned);
        any later one must have collected the same tests, else Mismatch."""
        group = self.groups[self._group_of[lane]]
        if group.nodeids is None:
            group.nodeids = list(nodeids)
            group.work = self._work(self._group_of[lane], nodeids)
            group.units.extend(group.work.units)
            return group.work
        if set(nodeids) != set(group.nodeids):
            ours, theirs = set(group.nodeids), set(nodeids)
            example = sorted(ours ^ theirs)[0]
            raise Mismatch(
                f"lane {lane} collected {len(theirs)} tests where another lane collected"
                f" {len(ours)} (e.g. {example}); collection must not depend on the lane or on"
                " randomness"
            )
        return None

    def take(self, lane: int) -> Unit | None:
        """The next unit for `lane`, or None: its group's queue is empty, or the run stops."""
        units = self.groups[self._group_of[lane]].units
        if self._halted or not units:
            return None
        unit = units.popleft()
        self._held[lane].extend(unit.nodeids)
        return unit

    def finished(self, lane: int, nodeid: str) -> None:
        """A test of `lane` has its result."""
        held = self._held[lane]
        if nodeid in held:
            held.remove(nodeid)

    def holds(self, lane: int) -> bool:
        """Whether `lane` was handed tests that have no result yet."""
        return bool(self._held[lane])

    def give_back(self, lane: int) -> None:
        """A lane that ended: its unfinished tests go back to the queue, first in line, since
        they are already late."""
        held, self._held[lane] = self._held[lane], []
        if held:
            units = self.groups[self._group_of[lane]].units
            units.appendleft(Unit(f"requeued from lane {lane}", tuple(held), 0.0))

    def replace(self, lane: int) -> bool:
        """Whether an ended lane gets a replacement: its group has work left, the run goes on,
        and it has not been replaced too often already (counted here)."""
        if self._halted or not self.groups[self._group_of[lane]].units:
            return False
        if self.restarts[lane] >= self._max_restarts:
            return False
        self.restarts[lane] += 1
        return True

    def stop(self, reason: str, lane: int | None = None) -> None:
        """Hand out nothing more (pytest's -x or --maxfail in some lane), for this reason (the
        latest lane's). The lane that stops runs nothing more of what it holds (reported as
        not run): it holds nothing from now on."""
        self.stopping = reason
        self._halted = True
        if lane is not None:
            self.give_back(lane)

    def halt(self) -> None:
        """Hand out nothing more: the run ends (a fault, a timeout)."""
        self._halted = True
