"""Lanes that take DB numbers (isolation = "database") from a server that has fewer than they
need, an external server or one of ours told `databases` in its settings: a usage error
(exit 2) that names the key and the fix, found when the server answers, not "DB index is out
of range" in the lanes' tests."""

from __future__ import annotations

import pytest

from testfleet.errors import ConfigError, ExitCode

pytestmark = pytest.mark.integration

FOUR = {"databases": 4}


def test_our_server_told_fewer_databases_than_lanes_is_a_usage_error(make_stack):
    """Six lanes on a server of ours with `databases 4`: refused as it starts."""
    table = {"services": {"valkey": {"isolation": "database", "settings": FOUR}}}
    with pytest.raises(ConfigError) as caught:
        make_stack(table, lanes=6)
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.message.startswith(
        "tool.testfleet.services.valkey.settings.databases: 6 lane(s) from DB 0 take DB numbers"
        " up to 5, and the server at 127.0.0.1:"
    )
    assert "has no DB 5 (ERR DB index is out of range)" in caught.value.message
    assert caught.value.message.endswith(
        '; use fewer lanes, a higher settings.databases, or isolation = "server"'
    )


def test_an_external_server_short_of_db_numbers_is_a_usage_error(make_stack):
    """Three lanes from DB 2 of an external server that has DB 0-3: DB 4 is missing."""
    shared = make_stack({"services": {"valkey": {"isolation": "database", "settings": FOUR}}})
    url = shared.provision(1).views["valkey"].values["url"]
    table = {"backend": "external", "url": url.rsplit("/", 1)[0] + "/2", "isolation": "database"}
    with pytest.raises(ConfigError) as caught:
        make_stack({"services": {"valkey": table}}, lanes=3)
    assert caught.value.message.startswith(
        "tool.testfleet.services.valkey.url: 3 lane(s) from DB 2 take DB numbers up to 4,"
    )
    assert "has no DB 4 (ERR DB index is out of range)" in caught.value.message
    assert caught.value.message.endswith(
        "; use fewer lanes, a lower DB number in the url, or a server with more databases"
    )


def test_a_lane_provisioned_later_past_the_db_numbers_is_a_usage_error(make_stack):
    """A lane made after the start (a recheck's, one an up makes for a run) whose DB number
    the server lacks is refused, not handed a URL that cannot be used."""
    table = {"services": {"valkey": {"isolation": "database", "settings": FOUR}}}
    stack = make_stack(table, lanes=4)
    assert stack.provision(4).views["valkey"].values["db"] == "3"
    with pytest.raises(ConfigError, match=r"5 lane\(s\) from DB 0 take DB numbers up to 4"):
        stack.provision(5)
