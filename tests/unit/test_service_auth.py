"""`auth`: Valkey, Redis and NATS servers of a run require a per-run credential unless the
service says `auth = false`; the switch is part of the stack's identity, the old opt-in keys
still read, and failures that look like a suite connecting without it name the switch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testfleet.errors import ConfigError
from testfleet.kinds import KINDS, credential_signs
from testfleet.project import validate
from testfleet.recheck.culprit import auth_hint
from testfleet.up.identity import differences, identity
from tests.helpers import project

AUTH_KINDS = ("valkey", "redis", "nats")


def error_of(table: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        validate(table)
    assert "\n" not in info.value.message
    return info.value.message


@pytest.mark.parametrize("kind", AUTH_KINDS)
def test_auth_is_on_by_default_and_off_on_request(kind: str):
    """Every kind that used to serve anyone now asks for the run's credential by default."""
    assert validate({"services": {kind: {}}}).services[kind].auth is True  # type: ignore[attr-defined]
    off = validate({"services": {kind: {"auth": False}}}).services[kind]
    assert off.auth is False  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", AUTH_KINDS)
def test_auth_is_a_switch(kind: str):
    """`auth = 1` is not a yes: the key is strict like every other switch."""
    assert error_of({"services": {kind: {"auth": 1}}}).startswith(
        f"tool.testfleet.services.{kind}.auth: "
    )


@pytest.mark.parametrize(
    ("kind", "old"), [("valkey", "password"), ("redis", "password"), ("nats", "token")]
)
def test_the_old_opt_in_still_reads_and_is_the_default(kind: str, old: str):
    """`password = true` / `token = true` asked for what is now the default: accepted, and the
    stack is the same one as without it (an up started with either serves both)."""
    with_old = project(Path("/p"), {"services": {kind: {old: True}}})
    plain = project(Path("/p"), {"services": {kind: {}}})
    assert with_old.config.services[kind].auth is True  # type: ignore[attr-defined]
    assert differences(identity(with_old), identity(plain)) == []


@pytest.mark.parametrize(
    ("kind", "old"), [("valkey", "password"), ("redis", "password"), ("nats", "token")]
)
def test_the_old_opt_out_names_the_new_switch(kind: str, old: str):
    """`password = false` meant "no password" when that was the default; now it would silently
    mean nothing, so it is refused with the key that does it."""
    message = error_of({"services": {kind: {old: False}}})
    assert message.startswith(f"tool.testfleet.services.{kind}.{old}: ")
    assert "auth = false" in message


def test_the_switch_is_part_of_the_stacks_identity():
    """A run with `auth = false` does not lease lanes from an up whose servers want a password
    (its suite would get NOAUTH), nor the other way round."""
    on = project(Path("/p"), {"services": {"valkey": {}, "nats": {}}})
    off = project(Path("/p"), {"services": {"valkey": {"auth": False}, "nats": {"auth": False}}})
    assert differences(identity(on), identity(off)) == [
        "services.nats.auth",
        "services.valkey.auth",
    ]


@pytest.mark.parametrize("kind", AUTH_KINDS)
def test_planned_values_carry_a_credential_only_with_auth(kind: str):
    """Planning fills placeholders in the shape a run will: with a credential in the URL
    unless `auth = false`."""
    field = "token" if kind == "nats" else "password"
    on = KINDS[kind].planned(validate({"services": {kind: {}}}).services[kind])
    off = KINDS[kind].planned(validate({"services": {kind: {"auth": False}}}).services[kind])
    assert on[field]
    assert f"{on[field]}@" in on["url"]
    assert off[field] == ""
    assert "@" not in off["url"]


def test_external_servers_take_their_credentials_from_the_url():
    """`auth` is about servers testfleet runs; an external one's URL says how to sign in."""
    config = validate(
        {"services": {"valkey": {"backend": "external", "url": "redis://h:6379/0", "auth": False}}}
    )
    assert config.services["valkey"].backend_name == "external"


NOAUTH_REDIS_PY = (
    "redis.exceptions.AuthenticationError: HELLO must be called with the client already"
    " authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used"
)


@pytest.mark.parametrize(
    ("message", "named"),
    [
        (NOAUTH_REDIS_PY, "tool.testfleet.services.cache.auth = false"),
        ("valkey.exceptions.AuthenticationError: Authentication required.", "services.cache.auth"),
        ("ResponseError: NOAUTH Authentication required.", "services.cache.auth"),
        ("nats.errors.Error: nats: 'Authorization Violation'", "services.nats.auth = false"),
    ],
)
def test_a_suite_connecting_without_the_credential_is_told_the_switch(message: str, named: str):
    """The summary hint names the service whose clients were refused and the key to set."""
    config = validate({"services": {"cache": {"kind": "valkey"}, "nats": {}}})
    messages = ["first failure: something else", f"E   {message}"]
    hint = auth_hint(messages, credential_signs(config.services))
    assert hint is not None
    assert named in hint


def test_no_hint_without_the_sign_or_when_auth_is_already_off():
    config = validate({"services": {"valkey": {}, "nats": {"auth": False}}})
    assert auth_hint(["AssertionError: 1 != 2"], credential_signs(config.services)) is None
    assert auth_hint(["nats: 'Authorization Violation'"], credential_signs(config.services)) is None
