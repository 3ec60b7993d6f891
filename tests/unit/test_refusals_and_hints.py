"""Pure parts of three messages: the summary hint naming `export = ["libpq"]` when a suite
connects the way libpq does by default; a refused credential ending the wait for an external
server at once (the kinds whose servers cannot run here: MongoDB and Neo4j, through their
drivers' fakes); and what provides a server that no pip extra brings."""

from __future__ import annotations

import time
from typing import Any

import pytest
from neo4j.exceptions import AuthError
from pymongo.errors import OperationFailure

from testfleet import binaries, readiness
from testfleet.backends.base import Address, ExternalLaunch
from testfleet.backends.external import refused, shown_url
from testfleet.errors import ConfigError, ServiceError
from testfleet.kinds import KINDS
from testfleet.kinds.mongodb import service as mongo_service
from testfleet.kinds.neo4j import service as neo4j_service
from testfleet.project import validate
from testfleet.recheck.culprit import export_hint

PSYCOPG_SOCKET = (
    "psycopg.OperationalError: connection failed: connection to server on socket"
    ' "/var/run/postgresql/.s.PGSQL.5432" failed: No such file or directory'
)
PSYCOPG_TCP = (
    'connection failed: connection to server at "localhost" (127.0.0.1), port 5432 failed:'
    " Connection refused"
)
LIBPQ_OLD = (
    "could not connect to server: No such file or directory\n\tIs the server running locally"
    ' and accepting\n\tconnections on Unix domain socket "/tmp/.s.PGSQL.5432"?'
)
ASYNCPG = "OSError: Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432)"


def services(table: dict[str, Any]) -> Any:
    return validate({"services": table}).services


@pytest.mark.parametrize("message", [PSYCOPG_SOCKET, PSYCOPG_TCP, LIBPQ_OLD, ASYNCPG])
def test_libpq_defaults_name_the_line_to_add(message: str):
    """A client at libpq's default socket or port, and no PG* exported: the line is named."""
    hint = export_hint([message], services({"db": {"kind": "postgres"}}))
    assert hint == (
        "some failures look like clients connecting where their library looks by default, and"
        " the run exports none of PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE: add"
        ' export = ["libpq"] to [tool.testfleet.services.db] (or connect through DB_URL)'
    )


def test_libpq_hint_keeps_the_services_own_table():
    """A service with an export table of its own is shown the list that keeps it."""
    table = {"postgres": {"export": {"DATABASE_URL": "{url}"}, "export-defaults": False}}
    hint = export_hint([PSYCOPG_SOCKET], services(table))
    assert hint is not None
    assert hint.endswith(
        'add export = ["libpq", { DATABASE_URL = "{url}" }] to [tool.testfleet.services.postgres]'
    )


def test_no_libpq_hint_where_it_would_not_help():
    """No hint when PG* is exported, when no postgres is configured, for another port, or for
    failures of another kind."""
    asked = services({"postgres": {"export": ["libpq"]}})
    plain = services({"postgres": {}})
    assert export_hint([PSYCOPG_SOCKET], asked) is None
    assert export_hint([PSYCOPG_SOCKET], services({"valkey": {}})) is None
    other_port = PSYCOPG_TCP.replace("5432", "5433")
    assert export_hint([other_port, "AssertionError: 1 != 2"], plain) is None


LAUNCH = ExternalLaunch("db", "{env.SHARED_URL}", "tool.testfleet.services.db", lambda u: None)  # type: ignore[arg-type,return-value]


def test_refusal_line_names_the_variable_and_hides_the_secret():
    """The url is shown with its user, never its password; the credential's place is the
    variable the config reads it from."""
    address = Address(
        "postgresql://app:s3cret@db:5432/main", "postgresql", "db", 5432, "app", "s3cret", "main"
    )
    failure = readiness.AuthFailed('password authentication failed for user "app"\n')
    assert refused(LAUNCH, address, failure) == (
        "db at postgresql://app@db:5432/main: authentication failed (password authentication"
        ' failed for user "app"); check the password in $SHARED_URL'
        " (tool.testfleet.services.db.url)"
    )
    token = Address("nats://t0ken@n:4222", "nats", "n", 4222, "t0ken")
    assert shown_url(token) == "nats://n:4222"
    literal = ExternalLaunch("v", "http://v:8200", "tool.testfleet.services.v", LAUNCH.parse)
    vault = readiness.AuthFailed("HTTP 403", credential="token", key="token", source="abc")
    assert refused(literal, Address("http://v:8200", "http", "v", 8200), vault).endswith(
        "check the token in tool.testfleet.services.v.token"
    )


def test_a_refusal_ends_the_wait_for_an_external_server_only():
    """Without a handle (an external server) a refusal is raised at once; a server of ours is
    polled on until its deadline (it may still be setting its credential)."""
    calls = []

    def probe(left: float) -> None:
        calls.append(left)
        raise readiness.AuthFailed("WRONGPASS")

    began = time.monotonic()
    with pytest.raises(readiness.AuthFailed):
        readiness.wait_ready(None, probe, timeout=30, what="x")
    assert len(calls) == 1
    assert time.monotonic() - began < 1

    class Running:
        def exit_code(self) -> None:
            return None

        def keep_log(self) -> str:
            return "log"

        def tail(self) -> str:
            return ""

    with pytest.raises(ServiceError, match=r"not ready after 0\.2 s"):
        readiness.wait_ready(Running(), probe, timeout=0.2, what="x")  # type: ignore[arg-type]
    assert len(calls) > 2


def test_mongodb_refused_credentials_are_final(monkeypatch: pytest.MonkeyPatch):
    """MongoDB's AuthenticationFailed (18) is a refusal; other failures stay retried."""

    class Refusing:
        def __init__(self, failure: Exception) -> None:
            self.admin = self
            self.failure = failure

        def command(self, name: str) -> None:
            raise self.failure

        def __enter__(self) -> Refusing:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    failure: Exception = OperationFailure("Authentication failed.", code=18)
    monkeypatch.setattr(mongo_service, "_client", lambda url, seconds: Refusing(failure))
    with pytest.raises(readiness.AuthFailed, match="Authentication failed"):
        mongo_service._ping("mongodb://app:wrong@h:1/db")(1.0)
    failure = OperationFailure("not primary", code=10107)
    with pytest.raises(OperationFailure):
        mongo_service._ping("mongodb://app:wrong@h:1/db")(1.0)


def test_neo4j_refused_credentials_name_the_password_key(monkeypatch: pytest.MonkeyPatch):
    """Neo4j's AuthError is a refusal of the `password` key when the config sets one."""

    def refusing(url: str, auth: Any, seconds: float) -> Any:
        raise AuthError("The client is unauthorized due to authentication failure.")

    monkeypatch.setattr(neo4j_service, "_driver", refusing)
    probe = neo4j_service._bolt("bolt://h:7687", ("neo4j", "x"), key="password", source="{env.P}")
    with pytest.raises(readiness.AuthFailed) as caught:
        probe(1.0)
    assert (caught.value.key, caught.value.source) == ("password", "{env.P}")
    assert "unauthorized" in caught.value.answer


@pytest.mark.parametrize("kind", ["mongodb", "neo4j"])
def test_no_server_found_names_what_provides_one(kind: str, monkeypatch: pytest.MonkeyPatch):
    """MongoDB's and Neo4j's extras hold their drivers only: a missing server is not sent to
    them, but to a binary on PATH, Docker or an external server."""
    monkeypatch.setattr(binaries, "_candidates", lambda lookup: [])
    with pytest.raises(ConfigError) as caught:
        KINDS[kind].binary(where=f"tool.testfleet.services.{kind}")
    message = caught.value.message
    assert "pip install" not in message
    assert f"no pip package brings a {KINDS[kind].label} server" in message
    assert 'backend = "docker"' in message
    assert 'backend = "external"' in message
