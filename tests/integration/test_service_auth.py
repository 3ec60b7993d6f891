"""Valkey, Redis and NATS servers of a run answer only clients with the run's credential:
another local user (`nobody`) and another run are refused, the exported URLs carry it, and
`auth = false` serves suites that connect without one."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
import redis

from testfleet.stack import Stack
from tests.helpers import recorded_pids
from tests.service_auth import (
    NATS,
    REDIS,
    SYSTEM_PYTHON,
    VALKEY,
    Case,
    as_nobody,
    ask,
    can_be_nobody,
    refused,
    served,
    stacks,
)

pytestmark = pytest.mark.integration

NEEDS_REDIS = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="no redis-server (apt-get install redis-server)"
)
CASES = [
    pytest.param(VALKEY, id="valkey"),
    pytest.param(REDIS, id="redis", marks=NEEDS_REDIS),
    pytest.param(NATS, id="nats"),
]
# Every isolation mode of servers testfleet runs: a server per lane, or DB numbers of one.
ISOLATED = [
    pytest.param(case, isolation, id=f"{case.service}-{isolation}", marks=marks)
    for case, marks in ((VALKEY, ()), (REDIS, NEEDS_REDIS), (NATS, ()))
    for isolation in (("server",) if case is NATS else ("server", "database"))
]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    yield from stacks(tmp_path)


def nats_round_trip(url: str) -> bytes:
    async def go() -> bytes:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
        try:
            sub = await nc.subscribe("auth.check")
            await nc.publish("auth.check", b"ok")
            return (await sub.next_msg(timeout=5)).data
        finally:
            await nc.close()

    return asyncio.run(go())


def works_through_its_url(service: str, url: str) -> None:
    """The exported URL is all an unchanged client needs."""
    if service == "nats":
        assert nats_round_trip(url) == b"ok"
        return
    client = redis.Redis.from_url(url)
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        client.close()


@pytest.mark.parametrize(("case", "isolation"), ISOLATED)
def test_another_user_is_refused_without_the_credential(
    start: Callable[..., Stack], case: Case, isolation: str
):
    """By default `nobody` can neither read nor write a lane's data; the URL works, also for
    lanes that share one server with a DB number each."""
    stack = start({case.service: {"isolation": isolation}}, lanes=2)
    for lane in (stack.provision(1), stack.provision(2)):
        url, secret = lane.env[case.variable], lane.views[case.service].values[case.field]
        assert secret
        assert secret in url
        assert refused(case, as_nobody(case, url))
        assert refused(case, as_nobody(case, url, "not-the-credential"))
        assert served(case, as_nobody(case, url, secret))
        works_through_its_url(case.service, url)


def test_files_holding_the_credentials_are_closed_to_other_users(start: Callable[..., Stack]):
    """The servers read their credentials from files in the run's private folders: `nobody`
    can open none of the files that hold them (nor see them in `ps`)."""
    stack = start({"valkey": {}, "nats": {}})
    lane = stack.provision(1)
    secrets = [lane.views["valkey"].values["password"], lane.views["nats"].values["token"]]
    holding = [
        path
        for path in stack.run.run_dir.path.rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in secrets)
    ]
    assert holding, "the servers' config files hold the credentials"
    opener = (
        "import sys\nfor p in sys.argv[1:]:\n try: open(p).read(); print(p)\n except OSError: pass"
    )
    if not can_be_nobody():
        pytest.skip("needs root (to act as another user), runuser and /usr/bin/python3")
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", str(SYSTEM_PYTHON), "-c", opener, *map(str, holding)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == ""
    for pid, _ in recorded_pids(stack.run.run_dir.path):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert not any(s.encode() in cmdline for s in secrets)


@pytest.mark.parametrize("case", CASES)
def test_one_run_cannot_use_anothers_servers(start: Callable[..., Stack], case: Case):
    """Each run has its own credential: run A's does not open run B's server."""
    first = start({case.service: {}}).provision(1)
    second = start({case.service: {}}).provision(1)
    secret_a = first.views[case.service].values[case.field]
    secret_b = second.views[case.service].values[case.field]
    assert secret_a != secret_b
    url_b = second.env[case.variable]
    assert refused(case, ask(case, url_b, secret_a))
    assert served(case, ask(case, url_b, secret_b))
    works_through_its_url(case.service, url_b)


@pytest.mark.parametrize("case", CASES)
def test_auth_false_serves_without_a_credential(start: Callable[..., Stack], case: Case):
    """`auth = false`, for suites that hard-code a password-less connection: no credential in
    the URL or the field, and a client without one is served."""
    lane = start({case.service: {"auth": False}}).provision(1)
    url, values = lane.env[case.variable], lane.views[case.service].values
    assert "@" not in url
    assert values[case.field] == ""
    if case is NATS:
        assert nats_round_trip(f"nats://{values['host']}:{values['port']}") == b"ok"
    else:
        client = redis.Redis(host=values["host"], port=int(values["port"]))
        assert client.ping()
        client.close()
    if can_be_nobody():
        assert served(case, as_nobody(case, url))


def test_database_lanes_are_emptied_for_the_next_run_with_the_credential(
    start: Callable[..., Stack],
):
    """A recycled lane's DB number is flushed through an authenticated connection (an up
    hands the lane to the next run)."""
    stack = start({"valkey": {"isolation": "database"}}, lanes=2)
    url = stack.provision(2).env["VALKEY_URL"]
    assert url.endswith("/1")
    client = redis.Redis.from_url(url)
    client.set("left", "over")
    stack.recycle(2)
    assert client.get("left") is None
    client.close()


def test_a_password_the_suite_hard_codes_is_the_one_in_the_url(start: Callable[..., Stack]):
    """`settings = { requirepass = ... }` (a suite with its own fixed password) wins over the
    run's: the server wants it, and the readiness probe and the URL use it."""
    spec = {"auth": False, "settings": {"requirepass": "hard-coded"}, "start-timeout": 5}
    lane = start({"valkey": spec}).provision(1)
    assert ":hard-coded@" in lane.env["VALKEY_URL"]
    assert refused(VALKEY, ask(VALKEY, lane.env["VALKEY_URL"]))
    works_through_its_url("valkey", lane.env["VALKEY_URL"])


def test_placeholders_carry_the_credentials(start: Callable[..., Stack]):
    """`{valkey.password}`, `{nats.token}` and the URLs with them reach a suite's own
    variables (a client configured field by field)."""
    env = {
        "CACHE": "{valkey.url}",
        "CACHE_PASSWORD": "{valkey.password}",
        "BUS_TOKEN": "{nats.token}",
    }
    lane = start({"valkey": {}, "nats": {}}, env=env).provision(1)
    assert lane.env["CACHE"] == lane.env["VALKEY_URL"]
    assert lane.env["CACHE_PASSWORD"] == lane.views["valkey"].values["password"] != ""
    assert lane.env["BUS_TOKEN"] == lane.views["nats"].values["token"] != ""
    assert lane.env["NATS_URL"].startswith(f"nats://{lane.env['BUS_TOKEN']}@")
