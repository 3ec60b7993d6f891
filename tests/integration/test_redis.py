"""`kind = "redis"`: Redis's own server (Debian's redis-server), not Valkey, isolated per lane
like Valkey."""

from __future__ import annotations

import shutil

import pytest
import redis

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="no redis-server on PATH (apt-get install redis-server)",
    ),
]


@pytest.mark.parametrize("isolation", ["server", "database"])
def test_redis_kind_runs_redis_and_isolates_lanes(make_stack, isolation):
    stack = make_stack({"services": {"redis": {"isolation": isolation}}}, lanes=2)
    one, two = stack.provision(1), stack.provision(2)
    assert "VALKEY_URL" not in one.env  # that name is a Valkey server's
    first = redis.Redis.from_url(one.env["REDIS_URL"])
    second = redis.Redis.from_url(two.env["REDIS_URL"])
    info = first.info("server")
    # Valkey answers INFO with valkey_version as well; Redis does not know it.
    assert "valkey_version" not in info
    assert info["redis_version"].startswith(("6.", "7."))
    first.set("k", "lane1")
    assert second.get("k") is None
    first.close()
    second.close()
    # The run's password is in the URL, and Redis wants it (Debian's redis-server 7 reads
    # `requirepass` from the config file like Valkey).
    view = one.views["redis"].values
    assert view["password"]
    assert f":{view['password']}@" in one.env["REDIS_URL"]
    anonymous = redis.Redis(host=view["host"], port=int(view["port"]), protocol=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()


def test_valkey_kind_is_still_valkey(make_stack):
    lane = make_stack({"services": {"valkey": {}}}).provision(1)
    client = redis.Redis.from_url(lane.env["VALKEY_URL"])
    assert "valkey_version" in client.info("server")
    client.close()
