"""`network = "namespace"` and `port = "default"` in the config: what each lane gets, and
what is refused before anything starts."""

from __future__ import annotations

import pytest

from testfleet.config import check_lanes, validate
from testfleet.errors import ConfigError


def test_default_port_is_the_kinds_own():
    config = validate(
        {
            "services": {
                "valkey": {"port": "default"},
                "pg": {"kind": "postgres", "port": "default", "isolation": "database"},
            }
        }
    )
    assert config.services["valkey"].port_number == 6379
    assert config.services["pg"].port_number == 5432


def test_command_services_have_no_default_port():
    with pytest.raises(
        ConfigError, match='port = "default": command services have no default port'
    ):
        validate({"services": {"app": {"kind": "command", "command": "x", "port": "default"}}})


def test_namespace_gives_every_server_kind_a_server_per_lane():
    config = validate({"network": "namespace", "services": {"postgres": {}, "valkey": {}}})
    assert config.services["postgres"].isolation_mode == "server"
    assert config.services["valkey"].isolation_mode == "server"


def test_namespace_refuses_a_shared_server():
    with pytest.raises(ConfigError, match='isolation = "database": with network = "namespace"'):
        validate({"network": "namespace", "services": {"postgres": {"isolation": "database"}}})


@pytest.mark.parametrize("backend", ["docker", "external"])
def test_namespace_refuses_servers_it_cannot_put_in_a_lane(backend: str):
    spec = {"backend": backend, **({"url": "redis://x/0"} if backend == "external" else {})}
    with pytest.raises(ConfigError, match=f"a {backend} server cannot join"):
        validate({"network": "namespace", "services": {"valkey": spec}})


def test_fixed_ports_in_every_lane_only_with_namespaces():
    services = {"valkey": {"port": "default"}, "nats": {"port": 4222}}
    check_lanes(validate({"network": "namespace", "services": services}), 8)
    with pytest.raises(ConfigError, match='network = "namespace"'):
        check_lanes(validate({"services": services}), 2)


def test_network_rejects_unknown_modes():
    with pytest.raises(ConfigError, match="network: must be one of shared, namespace"):
        validate({"network": "isolated"})


def test_namespaces_without_root_are_refused_in_one_line(monkeypatch: pytest.MonkeyPatch):
    from testfleet import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match=r'network = "namespace": testfleet runs lanes in'):
        netns.check_available("tool.testfleet.network")
