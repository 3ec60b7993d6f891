"""Which test files each lane has imported, so that the queue hands a lane units of its own
files first: lanes share one collection (worker/shared.py), each importing only its share
of the suite, and a unit of a file a lane has not imported costs it that import. Pure: the
coordinator tells it what lanes report and reorders its queue with it."""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from testfleet.lanes.queue import LaneQueue
from testfleet.lanes.state import LaneState
from testfleet.plan import Unit

# The queue puts what a lane held and did not finish first in line (queue.py's give_back).
REQUEUED = "requeued from lane"


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class Imported:
    def __init__(self) -> None:
        self._files: dict[int, set[str]] = {}
        self._seconds: dict[str, float] = {}  # how long each file took to collect

    def forget(self, lane: int) -> None:
        """A new process for `lane`: it has imported nothing yet."""
        self._files[lane] = set()

    def add(self, lane: int, files: Iterable[str], seconds: Mapping[str, float]) -> None:
        self._files.setdefault(lane, set()).update(files)
        for name, took in seconds.items():
            if isinstance(took, int | float) and took >= 0:
                self._seconds[str(name)] = float(took)

    def handed(self, lane: int, unit: Unit) -> None:
        """The lane imports the files of a unit it is handed."""
        self._files.setdefault(lane, set()).update(file_of(n) for n in unit.nodeids)

    def bring_forward(
        self, units: deque[Unit], lane: int, busy_for: Callable[[int], float | None]
    ) -> bool:
        """Put the unit `lane` should take next at the head of `units` (in queue order: the
        slowest first). That is the head, unless the head needs files the lane has not
        imported and a unit of files it has is at most that import time shorter: balance
        is kept where estimates differ, an import saved where they barely do. Requeued work
        stays first: it is already late.

        False: the lane should wait rather than take the head, which is shorter than its
        import here, while a lane that imported its files is between tests or in one that
        has not yet run as long as that import (`busy_for`: how long a lane has been in its
        test, None when it takes no more work): that lane takes it sooner."""
        own = self._files.get(lane)
        if not units or not own or units[0].key.startswith(REQUEUED):
            return True
        head = units[0]
        missing = {file_of(n) for n in head.nodeids} - own
        if not missing:
            return True
        # A file whose import no lane reported yet (its lane's collection is still on its
        # way) is taken to cost what imports typically do here.
        typical = statistics.median(self._seconds.values()) if self._seconds else 0.0
        cost = sum(self._seconds.get(name, typical) for name in missing)
        for index, unit in enumerate(units):
            if unit.estimate < head.estimate - cost:
                break  # units come slowest first: no later one is close enough either
            if all(file_of(n) in own for n in unit.nodeids):
                del units[index]
                units.appendleft(unit)
                return True
        if head.estimate >= cost:
            return True
        for other, files in self._files.items():
            if other != lane and not missing - files:
                took = busy_for(other)
                if took is not None and took < cost:
                    return False
        return True


def busy(state: LaneState) -> float | None:
    """How long a lane has been in its current test (0 between tests); None when it takes no
    more work (not started, collecting, told it is done, or gone)."""
    if state.process is None or not state.collected or state.done:
        return None
    return time.monotonic() - state.started_at if state.current is not None else 0.0


def take(
    imported: Imported | None,
    queue: LaneQueue,
    state: LaneState,
    busy_for: Callable[[int], float | None],
) -> tuple[Unit | None, bool]:
    """The unit the queue hands `state`'s lane (`imported`: the lanes' files, None when units
    keep pytest's order), and whether the lane should rather wait and ask again."""
    units = queue.groups[state.group].units
    steal = imported is None or imported.bring_forward(units, state.lane, busy_for)
    unit = queue.take(state.lane)
    if unit is not None and not steal:
        # A lane that imported its files takes it sooner than this one could import them.
        for nodeid in unit.nodeids:
            queue.finished(state.lane, nodeid)
        units.appendleft(unit)
        return None, True
    if unit is not None and imported is not None:
        imported.handed(state.lane, unit)
    return unit, False
