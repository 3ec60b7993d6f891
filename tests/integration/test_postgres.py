"""PostgreSQL from the wheel: password auth, test-speed settings, isolation per lane."""

from __future__ import annotations

import psycopg
import pytest

from testfleet.errors import ServiceError

pytestmark = pytest.mark.integration


def test_ready_with_password_auth(make_stack):
    """The URL's password works; a wrong password is refused: auth is real over TCP."""
    lane = make_stack({"services": {"postgres": {}}}).provision(1)
    url = lane.env["POSTGRES_URL"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SELECT current_database()").fetchone() == ("test_1",)
    view = lane.views["postgres"].values
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=view["host"],
            port=view["port"],
            user=view["user"],
            password="wrong",
            dbname=view["database"],
        )


def test_role_can_do_what_suites_do(make_stack):
    """Extensions, roles, databases and LISTEN/NOTIFY all work with the URL's role."""
    lane = make_stack({"services": {"postgres": {}}}).provision(1)
    with psycopg.connect(lane.env["POSTGRES_URL"], autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS citext")
        conn.execute("CREATE ROLE reader")
        conn.execute("CREATE DATABASE scratch")
        conn.execute("LISTEN jobs")
        conn.execute("NOTIFY jobs, 'hello'")
        note = next(conn.notifies(timeout=5, stop_after=1))
        assert note.payload == "hello"


@pytest.mark.parametrize("isolation", ["database", "server"])
def test_lanes_do_not_see_each_others_writes(make_stack, isolation):
    stack = make_stack(
        {
            "services": {
                "postgres": {
                    "isolation": isolation,
                    "setup": 'python -c "import os, psycopg; '
                    "psycopg.connect(os.environ['POSTGRES_URL'], autocommit=True)"
                    ".execute('CREATE TABLE t (v int)')\"",
                }
            }
        },
        lanes=2,
    )
    one, two = stack.provision(1), stack.provision(2)
    with psycopg.connect(one.env["POSTGRES_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    with psycopg.connect(two.env["POSTGRES_URL"]) as conn:
        # The table came from setup (so it exists in lane 2) but lane 1's row did not.
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    ports = {one.views["postgres"].values["port"], two.views["postgres"].values["port"]}
    assert len(ports) == (2 if isolation == "server" else 1)


def test_setup_failure_reports_its_output(make_stack):
    with pytest.raises(ServiceError) as info:
        make_stack({"services": {"postgres": {"setup": "echo migrating; exit 3"}}})
    assert info.value.message.startswith("postgres: setup command failed with exit code 3")
    assert "migrating" in info.value.details


def test_password_not_in_server_log(make_stack):
    stack = make_stack({"services": {"postgres": {}}})
    lane = stack.provision(1)
    password = lane.views["postgres"].values["password"]
    logs = [p.read_text() for p in stack.run.run_dir.path.rglob("*.log")]
    assert logs
    assert not any(password in text for text in logs)
