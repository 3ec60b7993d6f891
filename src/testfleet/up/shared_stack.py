"""`SharedStack`: a run's lanes leased from a running `testfleet up`, standing where a run's
own `Stack` would: lanes are leased from the up instead of provisioned here, and released to
it. Everything else is the run's own: its run directory, lanes, reports. If the up goes away
or a service of it dies, the run is told like it would be of its own stack's.
"""

from __future__ import annotations

from collections.abc import Sequence

from testfleet.errors import ServiceError
from testfleet.lanes.outcome import ServiceProblem
from testfleet.project import Project
from testfleet.rundir import process_start_ticks
from testfleet.runtime import Run
from testfleet.service import ServiceView
from testfleet.stack import LaneSetup, expand_lane_args, lane_environment
from testfleet.up.client import LEASE_TIMEOUT_SECONDS, Connection


class SharedStack:
    """The run's lanes, leased from a running `testfleet up`."""

    def __init__(self, project: Project, run: Run, connection: Connection, lanes: int) -> None:
        self.project = project
        self.run = run
        self.connection = connection
        self.lanes = lanes

    def start(self) -> None:
        """The up started the services."""

    def provision(self, lane: int) -> LaneSetup:
        answer = self.connection.ask(
            {"type": "lease", "lane": lane}, timeout=LEASE_TIMEOUT_SECONDS, lane=lane
        )
        if answer["type"] != "lane":
            raise ServiceError(f"the running `testfleet up` gave no lane: {answer.get('message')}")
        views = {
            name: ServiceView(name, view["kind"], view["values"])
            for name, view in answer["views"].items()
        }
        # Its services are the up's lane's; everything else in its env (the `env` table's
        # placeholders, TESTFLEET_*) is this run's, as with a stack of its own.
        env = lane_environment(self.project, views, self.common_values(lane), lanes=self.lanes)
        return LaneSetup(lane, views, env)

    def release(self, lane: int) -> None:
        self.connection.tell({"type": "release", "lane": lane})

    def note_process(self, pid: int) -> None:
        """A lane process of this run: if the run is killed, the up stops it before the lane
        goes to another run."""
        ticks = process_start_ticks(pid)
        if ticks is not None:
            self.connection.tell({"type": "pids", "pids": [[pid, ticks]]})

    def expand_args(self, args: Sequence[str], lane: LaneSetup) -> list[str]:
        return expand_lane_args(args, lane, self.common_values(lane.lane))

    def common_values(self, lane: int) -> dict[str, str]:
        return {
            "lane": str(lane),
            "lanes": str(self.lanes),
            "run_id": self.run.run_dir.run_id,
            "run_dir": str(self.run.run_dir.path),
            "project_dir": str(self.project.root),
        }

    def problem(self) -> ServiceProblem | None:
        return self.connection.poll()

    def stop(self) -> None:
        """The up recycles every lane this run held when the connection closes."""
        self.connection.close()
