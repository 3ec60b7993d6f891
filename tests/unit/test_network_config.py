"""`network = "namespace"` and `port = "default"` in the config: what each lane gets, and
what is refused before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testfleet.config_rules import check_lanes
from testfleet.errors import ConfigError
from testfleet.project import validate
from tests.helpers import write_pyproject


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


def test_a_kernel_without_user_namespaces_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch):
    """Not root, and the kernel refuses this user a user namespace: one line with the fix."""
    from testfleet import netns

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(netns, "_has_sys_admin", lambda: False)
    monkeypatch.setattr(netns, "_user_namespaces_work", lambda: "Operation not permitted")
    with pytest.raises(ConfigError, match=r"does not let user 1000 make a user namespace"):
        netns.check_available("tool.testfleet.network")


def test_other_users_rerun_in_a_user_namespace_of_their_own(monkeypatch: pytest.MonkeyPatch):
    from testfleet import netns

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(netns, "_has_sys_admin", lambda: False)
    monkeypatch.setattr(netns, "_user_namespaces_work", lambda: None)
    monkeypatch.delenv(netns.USERNS_VARIABLE, raising=False)
    assert netns.unavailable() is None
    assert netns.needs_user_namespace()
    argv = netns.reexec_argv(["run", "-n", "4"])
    assert argv[:5] == ["unshare", "--user", "--map-current-user", "--keep-caps", "--"]
    assert argv[-4:] == ["testfleet", "run", "-n", "4"]


FIXED_PORT_IN_NAMESPACES = (
    '[tool.testfleet]\nnetwork = "namespace"\n[tool.testfleet.services.valkey]\nport = "default"\n'
)


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("--network", "drop the --network shared option, which overrides"),
        ("TESTFLEET_NETWORK", "drop TESTFLEET_NETWORK=shared, which overrides"),
    ],
)
def test_up_under_shared_network_says_to_drop_the_option_not_to_add_the_key(
    tmp_path: Path, own_run_base: Path, monkeypatch: pytest.MonkeyPatch, option: str, hint: str
):
    """The file has network = "namespace" and `up --network shared` (or the env var) replaces
    it: why runs cannot share the up's lanes names that option, not the key the file has."""
    from testfleet.cli import main
    from testfleet.commands import up

    write_pyproject(tmp_path, FIXED_PORT_IN_NAMESPACES)
    args = ["--network", "shared"] if option.startswith("-") else []
    if not args:
        monkeypatch.setenv(option, "shared")
    refusals: list[str | None] = []
    # Nothing is started: the step that would start the stack records what it was told.
    monkeypatch.setattr(up, "serve", lambda project, warm, refusal: refusals.append(refusal))
    assert main(["-C", str(tmp_path), "up", *args]) == 0
    (refusal,) = refusals
    assert refusal is not None
    assert "only one can listen on port 6379" in refusal
    assert f'{hint} network = "namespace" in pyproject.toml' in refusal
    assert 'or network = "namespace" (each lane' not in refusal


def test_lanes_under_a_shared_network_option_name_that_option(
    tmp_path: Path, own_run_base: Path, capsys: pytest.CaptureFixture[str]
):
    """Refused before anything starts (-n 2, a fixed port): the option that replaced the
    file's namespaces is to be dropped; an option saying shared, with no such key, changed."""
    from testfleet.cli import main

    write_pyproject(tmp_path, FIXED_PORT_IN_NAMESPACES)
    assert main(["-C", str(tmp_path), "plan", "-n", "2", "--network", "shared"]) == 2
    err = capsys.readouterr().err
    assert 'drop the --network shared option, which overrides network = "namespace"' in err
    write_pyproject(tmp_path, '[tool.testfleet.services.valkey]\nport = "default"\n')
    assert main(["-C", str(tmp_path), "plan", "-n", "2", "--network", "shared"]) == 2
    err = capsys.readouterr().err
    assert "use -n 1, or --network namespace (each lane its own 127.0.0.1)" in err
