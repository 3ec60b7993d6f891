"""How each kind reads an external server's url, through the external backend: what it takes,
what it refuses (one line, exit 2, before anything is waited for), the secrets it notes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from testfleet.backends.base import ExternalLaunch, Server, Started
from testfleet.backends.external import ExternalBackend
from testfleet.errors import ConfigError, ServiceError
from testfleet.kinds import KINDS
from testfleet.kinds.nats.service import _address as nats_address
from testfleet.kinds.postgres.service import _address as postgres_address
from testfleet.kinds.valkey.service import _address as valkey_address
from testfleet.kinds.vault.service import _address as vault_address
from testfleet.project import validate


def test_postgres_reads_urls_and_keyword_strings_as_libpq_does():
    """A URL or `host=... port=...`; the password never appears in a refusal."""
    url = postgres_address("postgresql://app:s3cret@db.example:6543/main?sslmode=require")
    assert (url.host, url.port, url.user, url.password, url.path) == (
        "db.example",
        6543,
        "app",
        "s3cret",
        "main",
    )
    words = postgres_address("host=h port=5433 user=u dbname=d")
    assert (words.host, words.port, words.user, words.path) == ("h", 5433, "u", "d")
    with pytest.raises(ValueError, match="not a PostgreSQL URL") as info:
        postgres_address("postgresql://u:hunter2@h:5432/d?nonsense=1")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "db"), [("redis://:pw@h:6380/3", "3"), ("redis://h", ""), ("redis://h:1/2/", "2/")]
)
def test_valkey_takes_a_password_and_a_db_number(url: str, db: str):
    """The DB number is the path (a trailing slash is fine); the password is the userinfo's."""
    address = valkey_address(url)
    assert address.path == db
    assert address.password == ("pw" if "pw" in url else "")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("rediss://h:6380/0", "TLS and ACL users: not yet"),
        ("redis://alice:pw@h:6380/0", "got a user name"),
        ("redis://h:6380/zero", "with a numeric port and DB"),
        ("redis://h:port/0", "with a numeric port"),
    ],
)
def test_valkey_refuses_what_its_checks_cannot_speak(url: str, why: str):
    """TLS, ACL users and non-numbers are refused, saying what is wanted."""
    with pytest.raises(ValueError, match=why):
        valkey_address(url)


@pytest.mark.parametrize("url", ["nats://tok:@h:4222", "nats://u:p@h:4222", "tls://h:4222"])
def test_nats_takes_a_token_only(url: str):
    """user/password (even an empty password) and TLS are refused rather than waited for."""
    with pytest.raises(ValueError, match="TLS and user/password: not yet"):
        nats_address(url)
    assert nats_address("nats://tok@h").user == "tok"


def test_vault_defaults_its_port_by_scheme():
    """https without a port is 443, http 8200; a trailing slash is dropped."""
    assert vault_address("https://vault.example/").port == 443
    assert vault_address("http://vault.example").port == 8200
    assert vault_address("https://vault.example/").url == "https://vault.example"


def external_valkey(tmp_path: Path, url: str, lanes: int) -> tuple[Any, SimpleNamespace]:
    """A Valkey runtime on an external server, with a context whose `start` goes to the real
    external backend (which would wait for the server, if the url passed)."""
    waited: list[Server] = []

    def start(spec: Any, server: Server) -> Started:
        waited.append(server)
        return ExternalBackend().start(server)

    ctx = SimpleNamespace(
        start=start,
        secrets=[],
        lanes=lanes,
        folder=lambda name, label: tmp_path,
        service_secret=lambda name, spec: "x",
        waited=waited,
    )
    table = {"backend": "external", "url": url, "isolation": "database"}
    spec = validate({"services": {"valkey": table}}).services["valkey"]
    return KINDS["valkey"].runtime("valkey", spec, ctx, KINDS["valkey"]), ctx  # type: ignore[arg-type]


def test_db_numbers_past_the_servers_are_refused_before_waiting(tmp_path: Path):
    """Lanes from DB 14 need 14..17 of 16: a usage error at once, not after start-timeout."""
    service, ctx = external_valkey(tmp_path, "redis://:pw@127.0.0.1:1/14", lanes=4)
    with pytest.raises(ConfigError, match=r"4 lanes from DB 14 need DB numbers up to 17"):
        service.start()
    assert ctx.secrets == ["pw"]  # noted as soon as the url is read


def test_an_unreachable_external_server_is_named_with_its_address(tmp_path: Path):
    """Nothing answers: the wait ends at the deadline and names the service and where."""
    launch = ExternalLaunch("cache", "redis://127.0.0.1:1/0", "svc", valkey_address)
    server = Server("cache (shared)", tmp_path, never_ready, timeout=0.2, external=launch)
    with pytest.raises(ServiceError, match=r"cache at 127.0.0.1:1 did not answer as ready"):
        ExternalBackend().start(server)


def never_ready(at: Started) -> Any:
    """A probe that finds nothing listening, however long it is asked."""

    def probe(left: float) -> None:
        raise OSError("connection refused")

    return probe


def test_a_url_variable_that_is_not_set_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """`{env.NAME}` with NAME unset names the variable, before anything is waited for."""
    monkeypatch.delenv("NOWHERE_URL", raising=False)
    launch = ExternalLaunch("cache", "{env.NOWHERE_URL}", "svc", valkey_address)
    server = Server("cache", tmp_path, never_ready, timeout=5, external=launch)
    with pytest.raises(ConfigError, match=r"svc.url uses \{env.NOWHERE_URL\}, and NOWHERE_URL"):
        ExternalBackend().start(server)
