"""An external server that refuses the credential it is given fails the start at once, in
one line naming the service, its url without the secret and where the credential is set:
no wait until start-timeout changes a wrong password. The servers here are real ones
testfleet started natively (PostgreSQL, Valkey, NATS, OpenBao), reached as external ones."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testfleet.errors import ServiceError
from testfleet.stack import Stack
from tests.service_auth import stacks

pytestmark = pytest.mark.integration

# Well under the default start-timeout (30 s) that a refused credential used to wait out,
# with room for a loaded machine.
AT_ONCE = 10.0


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    yield from stacks(tmp_path)


def refused_within(start: Callable[..., Stack], services: dict[str, object]) -> str:
    """The one-line error of starting `services`, which must come well before start-timeout."""
    began = time.monotonic()
    with pytest.raises(ServiceError) as caught:
        start(services)
    took = time.monotonic() - began
    message = caught.value.message
    assert "\n" not in message
    assert took < AT_ONCE, f"took {took:.1f} s: {message}"
    return message


def test_wrong_postgres_password(start: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch):
    """A PostgreSQL url with a wrong password: its user, never its password, is named."""
    ours = start({"postgres": {}}).provision(1).views["postgres"].values
    url = f"postgresql://{ours['user']}:not-the-password@{ours['host']}:{ours['port']}/postgres"
    monkeypatch.setenv("WRONG_PG_URL", url)
    external = {"backend": "external", "url": "{env.WRONG_PG_URL}"}
    message = refused_within(start, {"postgres": external})
    assert message == (
        f"postgres at postgresql://{ours['user']}@{ours['host']}:{ours['port']}/postgres:"
        f' authentication failed (password authentication failed for user "{ours["user"]}");'
        " check the password in $WRONG_PG_URL (tool.testfleet.services.postgres.url)"
    )


@pytest.mark.parametrize("password", ["not-the-password", ""])
def test_wrong_or_missing_valkey_password(
    start: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch, password: str
):
    """A Valkey url with a wrong password (WRONGPASS), or none where one is required
    (NOAUTH)."""
    ours = start({"valkey": {}}).provision(1).views["valkey"].values
    auth = f":{password}@" if password else ""
    monkeypatch.setenv("WRONG_VALKEY_URL", f"redis://{auth}{ours['host']}:{ours['port']}/0")
    external = {"backend": "external", "url": "{env.WRONG_VALKEY_URL}"}
    message = refused_within(start, {"valkey": external})
    assert message.startswith(
        f"valkey at redis://{ours['host']}:{ours['port']}/0: authentication failed ("
        + ("WRONGPASS " if password else "NOAUTH ")
    )
    assert message.endswith(
        "); check the password in $WRONG_VALKEY_URL (tool.testfleet.services.valkey.url)"
    )
    assert ours["password"] not in message
    assert not password or password not in message


def test_wrong_nats_token(start: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch):
    """A NATS url with a wrong token (its user part): the url is shown without it."""
    ours = start({"nats": {}}).provision(1).views["nats"].values
    monkeypatch.setenv("WRONG_NATS_URL", f"nats://not-the-token@{ours['host']}:{ours['port']}")
    message = refused_within(
        start, {"nats": {"backend": "external", "url": "{env.WRONG_NATS_URL}"}}
    )
    assert message == (
        f"nats at nats://{ours['host']}:{ours['port']}: authentication failed (ERR"
        " 'Authorization Violation'); check the token in $WRONG_NATS_URL"
        " (tool.testfleet.services.nats.url)"
    )


def test_wrong_vault_token(start: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch):
    """An OpenBao server with a wrong token: named as the `token` key's variable."""
    ours = start({"vault": {}}).provision(1).views["vault"].values
    monkeypatch.setenv("WRONG_VAULT_ADDR", ours["addr"])
    monkeypatch.setenv("WRONG_VAULT_TOKEN", "not-the-token")
    external = {
        "backend": "external",
        "url": "{env.WRONG_VAULT_ADDR}",
        "token": "{env.WRONG_VAULT_TOKEN}",
    }
    message = refused_within(start, {"vault": external})
    assert re.fullmatch(
        rf"vault at http://{re.escape(ours['host'])}:{ours['port']}: authentication failed"
        r" \(HTTP 403 from auth/token/lookup-self: .*permission denied.*\); check the token in"
        r" \$WRONG_VAULT_TOKEN \(tool\.testfleet\.services\.vault\.token\)",
        message,
    ), message
    assert ours["token"] not in message
