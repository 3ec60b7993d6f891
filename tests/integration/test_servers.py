"""Valkey, NATS JetStream and Vault (OpenBao): readiness, credentials, isolation per lane."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import hvac
import nats
import pytest
import redis

from tests.helpers import recorded_pids

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("isolation", ["server", "database"])
def test_valkey_lanes_are_isolated(make_stack, isolation):
    stack = make_stack({"services": {"valkey": {"isolation": isolation}}}, lanes=2)
    one, two = stack.provision(1), stack.provision(2)
    assert "REDIS_URL" not in one.env  # an alias, asked for with export = ["redis"]
    first = redis.Redis.from_url(one.env["VALKEY_URL"])
    second = redis.Redis.from_url(two.env["VALKEY_URL"])
    first.set("k", "lane1")
    assert second.get("k") is None
    first.close()
    second.close()


def test_valkey_password(make_stack):
    lane = make_stack({"services": {"valkey": {"password": True}}}).provision(1)
    view = lane.views["valkey"].values
    assert redis.Redis.from_url(lane.env["VALKEY_URL"]).ping()
    anonymous = redis.Redis(host=view["host"], port=int(view["port"]))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()


def _stream_messages(url: str, publish: bool) -> int:
    async def go() -> int:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s.*"])
        if publish:
            await js.publish("s.x", b"1")
        info = await js.stream_info("S")
        await nc.close()
        return int(info.state.messages)

    return asyncio.run(go())


def test_nats_jetstream_lanes_are_isolated(make_stack):
    stack = make_stack({"services": {"nats": {"token": True}}}, lanes=2)
    one, two = stack.provision(1), stack.provision(2)
    assert _stream_messages(one.env["NATS_URL"], publish=True) == 1
    assert _stream_messages(two.env["NATS_URL"], publish=False) == 0


def test_vault_token_and_isolation(make_stack):
    stack = make_stack({"services": {"vault": {}}}, lanes=2)
    one, two = stack.provision(1), stack.provision(2)
    first = hvac.Client(url=one.env["VAULT_ADDR"], token=one.env["VAULT_TOKEN"])
    first.secrets.kv.v2.create_or_update_secret(path="app", secret={"k": "v"})
    second = hvac.Client(url=two.env["VAULT_ADDR"], token=two.env["VAULT_TOKEN"])
    with pytest.raises(hvac.exceptions.InvalidPath):
        second.secrets.kv.v2.read_secret_version(path="app", raise_on_deleted_version=True)
    stranger = hvac.Client(url=one.env["VAULT_ADDR"], token="not-the-token")
    assert not stranger.is_authenticated()


def test_whole_stack_env_contract(make_stack):
    stack = make_stack(
        {
            "services": {"postgres": {}, "valkey": {}, "nats": {}, "vault": {}},
            "env": {"APP_DSN": "{postgres.url}"},
        }
    )
    env = stack.provision(1).env
    for key in (
        "POSTGRES_URL",
        "VALKEY_URL",
        "NATS_URL",
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "TESTFLEET_RUN_ID",
        "TESTFLEET_LANE",
        "TESTFLEET_SERVICES",
    ):
        assert env[key], key
    assert env["APP_DSN"] == env["POSTGRES_URL"]
    # Asked for only (export = ["libpq"], ["redis"]): they change clients' defaults.
    assert not {"PGHOST", "PGPASSWORD", "REDIS_URL"} & set(env)
    assert env["TESTFLEET_LANE"] == "1"


def test_secrets_not_in_process_table(make_stack):
    """Passwords and tokens reach servers through files and env, never their command lines."""
    stack = make_stack(
        {
            "services": {
                "postgres": {},
                "valkey": {"password": True},
                "nats": {"token": True},
                "vault": {},
            }
        }
    )
    lane = stack.provision(1)
    secrets = [
        lane.views["postgres"].values["password"],
        lane.views["valkey"].values["password"],
        lane.views["nats"].values["token"],
        lane.views["vault"].values["token"],
    ]
    cmdlines = []
    for pid, _ in recorded_pids(stack.run.run_dir.path):
        with contextlib.suppress(OSError):
            cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    assert len(cmdlines) >= 4
    for secret in secrets:
        assert secret
        assert not any(secret in line for line in cmdlines)
