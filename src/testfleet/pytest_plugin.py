"""Runs inside every lane's pytest; gives tests their lane's view of the stack as fixtures.

    def test_orders(testfleet):
        conn = psycopg.connect(testfleet.url("postgres"))

The same values are in the environment (POSTGRES_URL, ...), so code that reads env vars
needs no fixture at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class LaneServices:
    """This lane's isolated view of every service testfleet started."""

    run_id: str
    lane: int
    lanes: int
    services: Mapping[str, Mapping[str, str]]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LaneServices | None:
        if "TESTFLEET_RUN_ID" not in environ:
            return None
        return cls(
            run_id=environ["TESTFLEET_RUN_ID"],
            lane=int(environ.get("TESTFLEET_LANE", "1")),
            # TESTFLEET_LANES: what env files of earlier versions held.
            lanes=int(environ.get("TESTFLEET_LANE_COUNT", environ.get("TESTFLEET_LANES", "1"))),
            services=json.loads(environ.get("TESTFLEET_SERVICES", "{}")),
        )

    def value(self, service: str, key: str) -> str:
        try:
            return self.services[service][key]
        except KeyError:
            known = ", ".join(self.services) or "none"
            raise LookupError(f"testfleet has no {service}.{key} (services: {known})") from None

    def url(self, service: str) -> str:
        return self.value(service, "url")


def pytest_report_header(config: pytest.Config) -> str | None:
    lane = LaneServices.from_env(os.environ)
    if lane is None:
        return None
    return f"testfleet: run {lane.run_id}, lane {lane.lane}/{lane.lanes}, services: " + (
        ", ".join(lane.services) or "none"
    )


@pytest.fixture(scope="session")
def testfleet() -> LaneServices:
    """This lane's services: `testfleet.url("postgres")`, `testfleet.value("vault", "token")`."""
    lane = LaneServices.from_env(os.environ)
    if lane is None:
        pytest.fail(
            "no testfleet stack: run the tests with `testfleet run`, or load the env"
            " that `testfleet up` prints",
            pytrace=False,
        )
    return lane
