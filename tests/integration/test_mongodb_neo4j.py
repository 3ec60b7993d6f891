"""MongoDB and Neo4j through a real Stack: readiness, lanes that do not see each other's
writes, and teardown. Each test runs its server natively when the binary is on PATH, else in
Docker when the image is already on the engine (nothing is pulled), else is skipped with the
reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from testfleet.kinds import KINDS

pytestmark = pytest.mark.integration

# Neo4j's JVM takes a while, more so in a container on a busy CI machine.
NEO4J_START = {"start-timeout": 180}
ENTERPRISE_IMAGE = "neo4j:5-enterprise"


def image_missing(image: str) -> str | None:
    """None when `image` is on a Docker engine that answers, else why it cannot be used."""
    if shutil.which("docker") is None:
        return f"no docker client on PATH to look for {image} with"
    try:
        done = subprocess.run(
            ["docker", "image", "inspect", image],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`docker image inspect {image}` did not answer within 30 s"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    last = lines[-1] if lines else f"exit code {done.returncode}"
    if "no such image" in last.lower():
        return f"no {image} image on the Docker engine"
    return f"no Docker engine to find {image} on ({last})"


def backend_for(kind: str) -> dict[str, Any]:
    """The service keys that run `kind` here: natively, else in Docker, else a skip."""
    record = KINDS[kind]
    assert record.lookup is not None
    assert record.image is not None
    program = record.lookup.program
    if shutil.which(program):
        return {"backend": "native"}
    why = image_missing(record.image)
    if why is None:
        return {"backend": "docker"}
    pytest.skip(f"no {program} on PATH and {why}: nothing to run {record.label} with here")


def containers_of(run_id: str) -> list[str]:
    done = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=testfleet.run={run_id}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.split()


# -- MongoDB -------------------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["database", "server"])
def test_mongodb_lanes_do_not_see_each_others_writes(make_stack, isolation):
    from pymongo import MongoClient

    service = {**backend_for("mongodb"), "isolation": isolation}
    stack = make_stack({"services": {"mongodb": service}}, lanes=2)
    one, two = stack.provision(1), stack.provision(2)
    first_url, second_url = one.env["MONGODB_URL"], two.env["MONGODB_URL"]
    with (
        MongoClient[dict[str, Any]](first_url, serverSelectionTimeoutMS=5000) as first,
        MongoClient[dict[str, Any]](second_url, serverSelectionTimeoutMS=5000) as second,
    ):
        assert first.admin.command("ping")["ok"] == 1
        first.get_default_database()["things"].insert_one({"lane": 1})
        assert first.get_default_database()["things"].count_documents({}) == 1
        assert second.get_default_database()["things"].count_documents({}) == 0
    views = one.views["mongodb"].values, two.views["mongodb"].values
    assert len({v["port"] for v in views}) == (2 if isolation == "server" else 1)
    assert len({(v["port"], v["database"]) for v in views}) == 2


def test_mongodb_replica_set_runs_transactions(make_stack):
    from pymongo import MongoClient

    service = {**backend_for("mongodb"), "replica-set": True}
    lane = make_stack({"services": {"mongodb": service}}).provision(1)
    with MongoClient[dict[str, Any]](
        lane.env["MONGODB_URL"], serverSelectionTimeoutMS=5000
    ) as client:
        assert client.admin.command("hello")["isWritablePrimary"] is True
        db = client.get_default_database()
        db.create_collection("orders")  # transactions cannot create collections before 4.4
        with client.start_session() as session, session.start_transaction():
            db["orders"].insert_one({"n": 1}, session=session)
        assert db["orders"].count_documents({}) == 1


def test_mongodb_gone_after_teardown(make_stack):
    from pymongo import MongoClient
    from pymongo.errors import ServerSelectionTimeoutError

    service = backend_for("mongodb")
    stack = make_stack({"services": {"mongodb": service}})
    url = stack.provision(1).env["MONGODB_URL"]
    stack.stop()
    with (
        MongoClient[dict[str, Any]](url, serverSelectionTimeoutMS=500) as client,
        pytest.raises(ServerSelectionTimeoutError),
    ):
        client.admin.command("ping")
    if service["backend"] == "docker":
        assert containers_of(stack.run.run_dir.run_id) == []


# -- Neo4j ---------------------------------------------------------------------------------------


def _neo4j_driver(env: Any) -> Any:
    from neo4j import GraphDatabase

    password = env["NEO4J_PASSWORD"]
    auth = (env["NEO4J_USER"], password) if password else None
    return GraphDatabase.driver(env["NEO4J_URI"], auth=auth, connection_timeout=5)


def test_neo4j_lanes_do_not_see_each_others_writes(make_stack):
    service = {**backend_for("neo4j"), **NEO4J_START}
    stack = make_stack({"services": {"neo4j": service}}, lanes=2)
    one, two = stack.provision(1), stack.provision(2)
    database = one.views["neo4j"].values["database"]
    with _neo4j_driver(one.env) as first, _neo4j_driver(two.env) as second:
        first.execute_query("CREATE (:Thing {lane: 1})", database_=database)
        count = "MATCH (n:Thing) RETURN count(n) AS c"
        assert first.execute_query(count, database_=database).records[0]["c"] == 1
        assert second.execute_query(count, database_=database).records[0]["c"] == 0
    assert one.env["NEO4J_URI"] != two.env["NEO4J_URI"]


def test_neo4j_container_password_is_required(make_stack):
    from neo4j import GraphDatabase
    from neo4j.exceptions import AuthError

    service = backend_for("neo4j")
    if service["backend"] != "docker":
        pytest.skip("natively Neo4j runs without auth (it listens on 127.0.0.1 only)")
    lane = make_stack({"services": {"neo4j": {**service, **NEO4J_START}}}).provision(1)
    assert len(lane.env["NEO4J_PASSWORD"]) >= 8
    with _neo4j_driver(lane.env) as driver:
        driver.verify_connectivity()
    wrong = GraphDatabase.driver(lane.env["NEO4J_URI"], auth=("neo4j", "not-the-password"))
    with wrong, pytest.raises(AuthError):
        wrong.verify_connectivity()


def test_neo4j_gone_after_teardown(make_stack):
    from neo4j.exceptions import ServiceUnavailable

    service = backend_for("neo4j")
    stack = make_stack({"services": {"neo4j": {**service, **NEO4J_START}}})
    env = stack.provision(1).env
    stack.stop()
    with _neo4j_driver(env) as driver, pytest.raises(ServiceUnavailable):
        driver.verify_connectivity()
    if service["backend"] == "docker":
        assert containers_of(stack.run.run_dir.run_id) == []


def test_neo4j_database_per_lane_on_enterprise(make_stack):
    if os.environ.get("NEO4J_ACCEPT_LICENSE_AGREEMENT") != "yes":
        pytest.skip(
            'isolation = "database" needs Neo4j Enterprise, whose image starts only with'
            " NEO4J_ACCEPT_LICENSE_AGREEMENT=yes exported, and it is not"
        )
    why = image_missing(ENTERPRISE_IMAGE)
    if why is not None:
        pytest.skip(f'isolation = "database" needs Neo4j Enterprise, and there is {why}')
    service = {
        "backend": "docker",
        "image": ENTERPRISE_IMAGE,
        "isolation": "database",
        **NEO4J_START,
    }
    stack = make_stack({"services": {"neo4j": service}}, lanes=2)
    one, two = stack.provision(1), stack.provision(2)
    first_db = one.views["neo4j"].values["database"]
    second_db = two.views["neo4j"].values["database"]
    assert (first_db, second_db) == ("lane1", "lane2")
    with _neo4j_driver(one.env) as driver:
        driver.execute_query("CREATE (:Thing)", database_=first_db)
        count = "MATCH (n:Thing) RETURN count(n) AS c"
        assert driver.execute_query(count, database_=second_db).records[0]["c"] == 0
