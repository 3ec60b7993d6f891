"""MongoDB and Neo4j runtimes without a server: the Server each describes for the native and
docker backends, each lane's values per isolation mode, external URLs, what teardown drops,
and the one-line errors. The backend is a fake that records Server descriptions; clients and
drivers are fakes put in each module's one seam (`_client`, `_driver`)."""

from __future__ import annotations

import signal
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from testfleet.backends.base import Server, Started
from testfleet.backends.external import ExternalBackend
from testfleet.binaries import Binary
from testfleet.errors import ConfigError, ServiceError
from testfleet.kinds import KINDS
from testfleet.kinds.mongodb import service as mongo_service
from testfleet.kinds.mongodb.service import MongoService, lane_url
from testfleet.kinds.neo4j import service as neo4j_service
from testfleet.kinds.neo4j.service import Neo4jService, native_conf
from testfleet.project import validate
from testfleet.readiness import NotReady

RUN_ID = "20250102-030405-a1b2c3"


def mongo_runtime(name: str, spec: Any, ctx: Any) -> MongoService:
    return MongoService(name, spec, ctx, KINDS["mongodb"])


def neo4j_runtime(name: str, spec: Any, ctx: Any) -> Neo4jService:
    return Neo4jService(name, spec, ctx, KINDS["neo4j"])


def make_ctx(tmp_path: Path, *, lanes: int = 2) -> SimpleNamespace:
    """What the runtimes use of a StackContext; `start` records each Server and hands back
    a new port, as a backend would (an external one goes to the real external backend, which
    reads its url and waits with the kind's probe, here against the fake drivers)."""
    servers: list[Server] = []
    secrets: list[str] = []

    def start(spec: Any, server: Server) -> Started:
        if spec.backend_name == "external":  # nothing to start: the real backend waits
            return ExternalBackend().start(server)
        servers.append(server)
        return Started(SimpleNamespace(name=server.name), "127.0.0.1", 41000 + len(servers))

    def secret() -> str:
        value = f"generated-secret-{len(secrets)}"
        secrets.append(value)
        return value

    def folder(name: str, label: str) -> Path:
        path = tmp_path / "run" / name / label
        path.mkdir(parents=True, exist_ok=True)
        return path

    return SimpleNamespace(
        start=start,
        servers=servers,
        secret=secret,
        service_secret=lambda name, spec: secret(),
        secrets=secrets,
        folder=folder,
        binaries={
            "mongodb": Binary(tmp_path / "mongo" / "bin" / "mongod", "system"),
            "neo4j": Binary(tmp_path / "neo4j" / "bin" / "neo4j", "system"),
        },
        lanes=lanes,
        run_id=RUN_ID,
        run_dir=SimpleNamespace(path=tmp_path),
    )


def spec_of(kind: str, **keys: Any) -> Any:
    """A validated spec, its defaults filled in as a run sees it (`replica_set` for the
    table's `replica-set`)."""
    table = {key.replace("_", "-"): value for key, value in keys.items()}
    return validate({"services": {kind: table}}).services[kind]


# -- fakes for the drivers -------------------------------------------------------------------


class FakeAdmin:
    def __init__(self, client: FakeMongo) -> None:
        self.client = client

    def command(self, name: str, value: Any = 1) -> dict[str, Any]:
        self.client.commands.append((name, value))
        answer = self.client.answers.get(name, {"ok": 1})
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)


class FakeMongo:
    def __init__(self, url: str = "", answers: dict[str, Any] | None = None) -> None:
        self.url = url
        self.answers = answers or {}
        self.commands: list[tuple[str, Any]] = []
        self.dropped: list[str] = []
        self.admin = FakeAdmin(self)

    def drop_database(self, name: str) -> None:
        self.dropped.append(name)

    def __enter__(self) -> FakeMongo:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def mongo_clients(monkeypatch: pytest.MonkeyPatch) -> list[FakeMongo]:
    """Every client the module makes, each a fresh fake that answers ping."""
    made: list[FakeMongo] = []

    def client(url: str, seconds: float) -> FakeMongo:
        assert 0 < seconds <= mongo_service.CALL_SECONDS
        made.append(FakeMongo(url))
        return made[-1]

    monkeypatch.setattr(mongo_service, "_client", client)
    return made


class FakeResult:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def single(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None

    def data(self) -> list[dict[str, Any]]:
        return self.rows

    def consume(self) -> None:
        pass


class FakeSession:
    def __init__(self, driver: FakeDriver, database: str | None) -> None:
        self.driver = driver
        self.database = database

    def run(self, query: str) -> FakeResult:
        self.driver.queries.append((self.database, query))
        if self.driver.failure is not None:
            raise self.driver.failure
        return FakeResult(self.driver.rows)

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FakeDriver:
    def __init__(self, url: str, auth: Any) -> None:
        self.url = url
        self.auth = auth
        self.queries: list[tuple[str | None, str]] = []
        self.rows: list[dict[str, Any]] = [{"1": 1}]
        self.failure: Exception | None = None
        self.verified = False
        self.closed = False

    def verify_connectivity(self) -> None:
        self.verified = True

    def session(self, database: str | None = None) -> FakeSession:
        return FakeSession(self, database)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def drivers(monkeypatch: pytest.MonkeyPatch) -> list[FakeDriver]:
    made: list[FakeDriver] = []

    def driver(url: str, auth: Any, seconds: float) -> FakeDriver:
        assert seconds > 0
        made.append(FakeDriver(url, auth))
        return made[-1]

    monkeypatch.setattr(neo4j_service, "_driver", driver)
    return made


def every_argv(server: Server, port: int) -> list[str]:
    assert server.native is not None
    assert server.container is not None
    return [*server.native.argv(port), *server.container.command]


# -- MongoDB: the servers it describes --------------------------------------------------------


def test_mongo_native_server_binds_loopback_without_a_unix_socket(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    mongo_runtime("mongodb", spec_of("mongodb"), ctx).start()
    [server] = ctx.servers
    assert server.native is not None
    argv = list(server.native.argv(45123))
    data = tmp_path / "run" / "mongodb" / "shared" / "data"
    assert argv == [
        str(tmp_path / "mongo" / "bin" / "mongod"),
        *("--bind_ip", "127.0.0.1", "--port", "45123", "--dbpath", str(data)),
        *("--quiet", "--nounixsocket"),
    ]
    assert data.is_dir()
    assert server.native.stop_signal == signal.SIGKILL
    assert server.name == "mongodb (shared)"


def test_mongo_native_data_is_fresh_for_each_attempt(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    mongo_runtime("mongodb", spec_of("mongodb"), ctx).start()
    assert ctx.servers[0].native is not None
    argv = ctx.servers[0].native.argv
    data = Path(argv(1)[argv(1).index("--dbpath") + 1])
    (data / "mongod.lock").write_text("4242")
    argv(2)
    assert list(data.iterdir()) == []


def test_mongo_container_uses_tmpfs_and_the_record_image(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    mongo_runtime("mongodb", spec_of("mongodb", backend="docker"), ctx).start()
    launch = ctx.servers[0].container
    assert launch is not None
    assert launch.image == "mongo:8"
    assert launch.inner_port == 27017
    assert list(launch.command) == ["mongod", "--bind_ip_all", "--port", "27017"]
    assert launch.tmpfs == {"/data/db": "rw,mode=1777"}
    assert launch.env == {}


def test_mongo_replica_set_and_image_override(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    spec = spec_of("mongodb", backend="docker", image="mirror/mongo:7", replica_set=True)
    mongo_runtime("mongodb", spec, ctx).start()
    server = ctx.servers[0]
    assert server.container is not None
    assert server.native is not None
    assert server.container.image == "mirror/mongo:7"
    assert list(server.container.command)[-2:] == ["--replSet", "rs0"]
    assert list(server.native.argv(5))[-2:] == ["--replSet", "rs0"]


# -- MongoDB: lanes ------------------------------------------------------------------------------


def test_mongo_database_isolation_one_server_a_database_per_lane(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    service = mongo_runtime("mongodb", spec_of("mongodb"), ctx)
    service.start()
    one, two = service.provision(1, {}), service.provision(2, {})
    assert len(ctx.servers) == 1
    assert one.values == {
        "url": "mongodb://127.0.0.1:41001/test_1",
        "host": "127.0.0.1",
        "port": "41001",
        "database": "test_1",
    }
    assert two.values["database"] == "test_2"
    assert two.values["url"] == "mongodb://127.0.0.1:41001/test_2"


def test_mongo_server_isolation_a_server_per_lane(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    spec = spec_of("mongodb", isolation="server", database="app")
    service = mongo_runtime("mongodb", spec, ctx)
    service.start()
    assert ctx.servers == []
    one, two = service.provision(1, {}), service.provision(2, {})
    assert [s.name for s in ctx.servers] == ["mongodb (lane 1)", "mongodb (lane 2)"]
    assert one.values["url"] == "mongodb://127.0.0.1:41001/app"
    assert two.values["url"] == "mongodb://127.0.0.1:41002/app"
    assert one.values["database"] == two.values["database"] == "app"


def test_mongo_replica_set_urls_connect_directly(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    spec = spec_of("mongodb", backend="docker", replica_set=True)
    service = mongo_runtime("mongodb", spec, ctx)
    service.start()
    url = service.provision(1, {}).values["url"]
    assert url == "mongodb://127.0.0.1:41001/test_1?directConnection=true"


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on (and never answers): the probe's TCP check passes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("backend", ["docker", "native"])
def test_mongo_replica_set_probe_initiates_with_the_address_mongod_knows(
    tmp_path: Path, mongo_clients: list[FakeMongo], listening: int, backend: str
):
    """In a container mongod is 127.0.0.1 and the inner port; natively the port it got."""
    ctx = make_ctx(tmp_path)
    spec = spec_of("mongodb", backend=backend, replica_set=True)
    mongo_runtime("mongodb", spec, ctx).start()
    probe = ctx.servers[0].probe(Started(SimpleNamespace(), "127.0.0.1", listening))
    with pytest.raises(NotReady, match="no writable primary"):
        probe(5.0)
    [client] = mongo_clients
    assert client.url == f"mongodb://127.0.0.1:{listening}/?directConnection=true"
    member = "127.0.0.1:27017" if backend == "docker" else f"127.0.0.1:{listening}"
    initiate = dict(client.commands)["replSetInitiate"]
    assert initiate == {"_id": "rs0", "members": [{"_id": 0, "host": member}]}


def test_mongo_probe_fails_fast_while_nothing_listens(
    tmp_path: Path, mongo_clients: list[FakeMongo]
):
    ctx = make_ctx(tmp_path)
    mongo_runtime("mongodb", spec_of("mongodb"), ctx).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        ctx.servers[0].probe(Started(SimpleNamespace(), "127.0.0.1", closed))(5.0)
    assert mongo_clients == []


def test_mongo_replica_set_probe_passes_once_primary(monkeypatch: pytest.MonkeyPatch):
    answers: dict[str, Any] = {"hello": {"setName": "rs0", "isWritablePrimary": False}}
    client = FakeMongo(answers=answers)
    monkeypatch.setattr(mongo_service, "_client", lambda url, seconds: client)
    probe = mongo_service._ping("mongodb://h:1/?directConnection=true", "h:1")
    with pytest.raises(NotReady):
        probe(1.0)  # initiated, still electing: no second replSetInitiate
    answers["hello"] = {"setName": "rs0", "isWritablePrimary": True}
    probe(1.0)
    assert [name for name, _ in client.commands] == ["ping", "hello", "ping", "hello"]


def test_mongo_replica_set_probe_tolerates_an_earlier_initiate(monkeypatch: pytest.MonkeyPatch):
    """A check cut short after replSetInitiate leaves the next one AlreadyInitialized (23)."""
    client = FakeMongo(answers={"hello": {}})
    monkeypatch.setattr(mongo_service, "_client", lambda url, seconds: client)
    client.answers["replSetInitiate"] = OperationFailure("already initialized", code=23)
    with pytest.raises(NotReady):
        mongo_service._ping("u", "h:1")(1.0)
    client.answers["replSetInitiate"] = OperationFailure("bad config", code=93)
    with pytest.raises(OperationFailure, match="bad config"):
        mongo_service._ping("u", "h:1")(1.0)


def test_mongo_local_stop_touches_no_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def no_client(url: str, seconds: float) -> FakeMongo:
        raise AssertionError("a local server goes with its backend")

    monkeypatch.setattr(mongo_service, "_client", no_client)
    service = mongo_runtime("mongodb", spec_of("mongodb"), make_ctx(tmp_path))
    service.start()
    service.provision(1, {})
    service.stop()


# -- MongoDB: external ---------------------------------------------------------------------------


def external_mongo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, **keys: Any) -> Any:
    monkeypatch.setenv("MONGO_TEST_URL", url)
    spec = spec_of("mongodb", backend="external", url="{env.MONGO_TEST_URL}", **keys)
    ctx = make_ctx(tmp_path)
    return mongo_runtime("mongodb", spec, ctx), ctx


def test_mongo_external_lane_urls_keep_credentials_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mongo_clients: list[FakeMongo]
):
    url = "mongodb://app:p%40ss@db1.example:27018,db2.example:27019/main?replicaSet=rs&tls=true"
    service, ctx = external_mongo(tmp_path, monkeypatch, url)
    service.start()
    assert mongo_clients[0].url == url
    assert mongo_clients[0].commands == [("ping", 1)]
    assert ctx.secrets == ["p@ss", "p%40ss"]
    assert ctx.servers == []
    values = service.provision(2, {}).values
    database = "test_20250102_030405_a1b2c3_2"
    assert values == {
        "url": f"mongodb://app:p%40ss@db1.example:27018,db2.example:27019/{database}"
        "?replicaSet=rs&tls=true&authSource=main",
        "host": "db1.example",
        "port": "27018",
        "database": database,
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Credentials authenticate where they did: the old path's database, or admin.
        ("mongodb://u:p@h/?w=1", "mongodb://u:p@h/lane?w=1&authSource=admin"),
        ("mongodb://u:p@h/app", "mongodb://u:p@h/lane?authSource=app"),
        ("mongodb://u:p@h/app?AuthSource=x", "mongodb://u:p@h/lane?AuthSource=x"),
        # No credentials: nothing to authenticate, nothing added.
        ("mongodb://h:1/app", "mongodb://h:1/lane"),
        (
            "mongodb+srv://u:p@cluster.example/",
            "mongodb+srv://u:p@cluster.example/lane?authSource=admin",
        ),
    ],
)
def test_mongo_lane_url(url: str, expected: str):
    assert lane_url(url, "lane") == expected


def test_mongo_external_stop_drops_only_the_databases_it_handed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mongo_clients: list[FakeMongo]
):
    service, _ = external_mongo(tmp_path, monkeypatch, "mongodb://h:27017/app", database="it")
    service.start()
    names = [service.provision(lane, {}).values["database"] for lane in (1, 2)]
    assert names == ["it_20250102_030405_a1b2c3_1", "it_20250102_030405_a1b2c3_2"]
    service.stop()
    assert mongo_clients[-1].dropped == names
    service.stop()  # a second teardown has nothing left to drop
    assert sum(len(c.dropped) for c in mongo_clients) == 2


def test_mongo_external_stop_goes_on_when_the_server_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mongo_clients: list[FakeMongo]
):
    service, _ = external_mongo(tmp_path, monkeypatch, "mongodb://h/app")
    service.start()
    service.provision(1, {})

    class Gone(FakeMongo):
        def drop_database(self, name: str) -> None:
            raise ConnectionError("server went away")

    monkeypatch.setattr(mongo_service, "_client", lambda url, seconds: Gone(url))
    service.stop()


@pytest.mark.parametrize("url", ["postgresql://h/app", "h:27017", "mongodb://user:pw@/app"])
def test_mongo_external_url_must_be_mongodb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mongo_clients: list[FakeMongo], url: str
):
    service, _ = external_mongo(tmp_path, monkeypatch, url)
    with pytest.raises(ConfigError, match=r"services\.mongodb\.url: want mongodb://"):
        service.start()
    assert mongo_clients == []


def test_mongo_external_database_names_fit_mongodb_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mongo_clients: list[FakeMongo]
):
    service, _ = external_mongo(tmp_path, monkeypatch, "mongodb://h/app", database="d" * 40)
    with pytest.raises(ConfigError, match="limit of 63 bytes"):
        service.start()


def test_mongo_without_pymongo_is_a_one_line_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "pymongo", None)
    with pytest.raises(ConfigError) as info:
        mongo_runtime("users", spec_of("mongodb"), make_ctx(tmp_path))
    assert info.value.message == (
        "tool.testfleet.services.users: MongoDB needs the pymongo driver next to testfleet;"
        " pip install 'testfleet[mongodb]'"
    )


# -- Neo4j: the servers it describes -------------------------------------------------------------


def conf_settings(path: Path) -> dict[str, str]:
    lines = [ln for ln in path.read_text().splitlines() if "=" in ln and not ln.startswith("#")]
    keys = [ln.partition("=")[0] for ln in lines if not ln.startswith("server.jvm.additional")]
    assert len(keys) == len(set(keys)), "a key set twice"
    return dict(ln.partition("=")[::2] for ln in lines)


def test_neo4j_native_writes_a_private_conf_on_loopback_without_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("NEO4J_CONF", raising=False)
    ctx = make_ctx(tmp_path)
    service = neo4j_runtime("neo4j", spec_of("neo4j"), ctx)
    values = service.provision(1, {}).values
    [server] = ctx.servers
    assert server.native is not None
    folder = tmp_path / "run" / "neo4j" / "lane1"
    assert list(server.native.argv(47001)) == [str(tmp_path / "neo4j" / "bin" / "neo4j"), "console"]
    conf = folder / "conf" / "neo4j.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    settings = conf_settings(conf)
    assert settings["server.default_listen_address"] == "127.0.0.1"
    assert settings["server.bolt.listen_address"] == ":47001"
    assert settings["server.http.enabled"] == settings["server.https.enabled"] == "false"
    assert settings["dbms.security.auth_enabled"] == "false"
    for directory in ("data", "logs", "run"):
        assert settings[f"server.directories.{directory}"] == str(folder / directory)
    env = server.native.env
    assert isinstance(env, dict)
    assert env["NEO4J_CONF"] == str(folder / "conf")
    assert server.native.stop_signal == signal.SIGKILL
    assert server.native.signal_group
    assert values == {
        "url": "bolt://127.0.0.1:41001",
        "host": "127.0.0.1",
        "port": "41001",
        "user": "neo4j",
        "password": "",
        "database": "neo4j",
    }
    assert ctx.secrets == []


def test_neo4j_native_conf_builds_on_the_install_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The install's JVM options and log configs are kept; our keys replace its own."""
    monkeypatch.delenv("NEO4J_CONF", raising=False)
    install = tmp_path / "neo4j" / "conf"
    install.mkdir(parents=True)
    (install / "neo4j.conf").write_text(
        "#server.bolt.listen_address=:7687\n"
        "server.bolt.listen_address=:7687\n"
        "server.directories.data=/var/lib/neo4j/data\n"
        "server.jvm.additional=-XX:+UseG1GC\n"
    )
    (install / "server-logs.xml").write_text("<Configuration/>")
    ctx = make_ctx(tmp_path)
    neo4j_runtime("neo4j", spec_of("neo4j"), ctx).provision(1, {})
    assert ctx.servers[0].native is not None
    ctx.servers[0].native.argv(47002)
    conf_dir = tmp_path / "run" / "neo4j" / "lane1" / "conf"
    settings = conf_settings(conf_dir / "neo4j.conf")
    assert settings["server.bolt.listen_address"] == ":47002"
    assert settings["server.jvm.additional"] == "-XX:+UseG1GC"
    assert settings["server.directories.data"].startswith(str(tmp_path))
    assert (conf_dir / "server-logs.xml").read_text() == "<Configuration/>"


def test_neo4j_native_enterprise_listeners_get_ports_of_their_own(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    neo4j_runtime("neo4j", spec_of("neo4j"), ctx).provision(1, {})
    assert ctx.servers[0].native is not None
    ctx.servers[0].native.argv(47003)
    settings = conf_settings(tmp_path / "run" / "neo4j" / "lane1" / "conf" / "neo4j.conf")
    ports = {settings[f"{name}.listen_address"] for name in neo4j_service.ENTERPRISE_LISTENERS}
    assert len(ports) == 3
    assert not ports & {":5000", ":6000", ":7000"}  # Enterprise's defaults


def test_native_conf_replaces_keys_and_keeps_the_rest():
    base = "a=1\n b = 2\n#a=old\nkeep=yes\n"
    assert native_conf(base, {"a": "9", "b": "8"}) == "#a=old\nkeep=yes\na=9\nb=8\n"


def test_neo4j_container_password_through_env_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NEO4J_ACCEPT_LICENSE_AGREEMENT", raising=False)
    ctx = make_ctx(tmp_path)
    service = neo4j_runtime("neo4j", spec_of("neo4j", backend="docker"), ctx)
    values = service.provision(1, {}).values
    launch = ctx.servers[0].container
    assert launch is not None
    [password] = ctx.secrets
    assert len(password) >= 8
    assert launch.env == {
        "NEO4J_AUTH": f"neo4j/{password}",
        "NEO4J_server_memory_heap_max__size": "512m",
        "NEO4J_server_memory_pagecache_size": "256m",
    }
    assert launch.image == "neo4j:5"
    assert launch.inner_port == 7687
    assert launch.tmpfs == {"/data": "rw,mode=1777"}
    assert not any(password in arg for arg in every_argv(ctx.servers[0], 47004))
    assert values["password"] == password
    assert values["user"] == "neo4j"
    assert values["url"] == "bolt://127.0.0.1:41001"


def test_neo4j_container_memory_follows_limits_and_image_override(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    spec = spec_of("neo4j", backend="docker", image="neo4j:5-enterprise", limits={"memory": "2g"})
    neo4j_runtime("neo4j", spec, ctx).provision(1, {})
    launch = ctx.servers[0].container
    assert launch is not None
    assert launch.image == "neo4j:5-enterprise"
    assert launch.env["NEO4J_server_memory_heap_max__size"] == "1024m"
    assert launch.env["NEO4J_server_memory_pagecache_size"] == "512m"


def test_neo4j_license_is_forwarded_only_when_the_user_exported_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NEO4J_ACCEPT_LICENSE_AGREEMENT", "yes")
    ctx = make_ctx(tmp_path)
    neo4j_runtime("neo4j", spec_of("neo4j", backend="docker"), ctx).provision(1, {})
    assert ctx.servers[0].container is not None
    assert ctx.servers[0].container.env["NEO4J_ACCEPT_LICENSE_AGREEMENT"] == "yes"


def test_neo4j_container_refuses_another_user(tmp_path: Path):
    with pytest.raises(ConfigError, match='user = "admin": the image sets a password'):
        neo4j_runtime("neo4j", spec_of("neo4j", backend="docker", user="admin"), make_ctx(tmp_path))


@pytest.mark.parametrize(("backend", "auth"), [("docker", True), ("native", False)])
def test_neo4j_probe_runs_a_query_with_the_lane_credentials(
    tmp_path: Path, drivers: list[FakeDriver], backend: str, auth: bool
):
    ctx = make_ctx(tmp_path)
    neo4j_runtime("neo4j", spec_of("neo4j", backend=backend), ctx).provision(1, {})
    ctx.servers[0].probe(Started(SimpleNamespace(), "127.0.0.1", 47005))(0.5)
    [driver] = drivers
    assert driver.url == "bolt://127.0.0.1:47005"
    assert driver.auth == (("neo4j", ctx.secrets[0]) if auth else None)
    assert driver.verified
    assert driver.queries == [(None, "RETURN 1")]
    assert driver.closed


# -- Neo4j: lanes --------------------------------------------------------------------------------


def test_neo4j_server_isolation_a_server_per_lane(tmp_path: Path, drivers: list[FakeDriver]):
    ctx = make_ctx(tmp_path)
    service = neo4j_runtime("neo4j", spec_of("neo4j", backend="docker"), ctx)
    service.start()
    assert ctx.servers == []
    one, two = service.provision(1, {}), service.provision(2, {})
    assert [one.values["port"], two.values["port"]] == ["41001", "41002"]
    assert one.values["database"] == two.values["database"] == "neo4j"
    service.stop()
    assert drivers == []


def test_neo4j_database_isolation_one_server_a_database_per_lane(
    tmp_path: Path, drivers: list[FakeDriver]
):
    ctx = make_ctx(tmp_path)
    spec = spec_of("neo4j", backend="docker", isolation="database", start_timeout=45)
    service = neo4j_runtime("neo4j", spec, ctx)
    service.start()
    [admin] = drivers
    assert admin.url == "bolt://127.0.0.1:41001"
    assert admin.auth == ("neo4j", ctx.secrets[0])
    one, two = service.provision(1, {}), service.provision(2, {})
    assert len(ctx.servers) == 1
    assert (one.values["database"], two.values["database"]) == ("lane1", "lane2")
    assert one.values["url"] == two.values["url"] == "bolt://127.0.0.1:41001"
    assert admin.queries == [
        ("system", "CREATE DATABASE `lane1` WAIT 45 SECONDS"),
        ("system", "CREATE DATABASE `lane2` WAIT 45 SECONDS"),
    ]
    service.stop()  # its own server is thrown away whole: nothing to drop
    assert len(admin.queries) == 2
    assert admin.closed


def test_neo4j_create_database_refused_names_enterprise(tmp_path: Path, drivers: list[FakeDriver]):
    service = neo4j_runtime(
        "neo4j",
        spec_of("neo4j", backend="docker", isolation="database"),
        make_ctx(tmp_path),
    )
    service.start()
    drivers[0].failure = RuntimeError("Unsupported administration command")
    with pytest.raises(ServiceError, match="needs Neo4j Enterprise"):
        service.provision(1, {})


def test_neo4j_database_not_online_in_time(tmp_path: Path, drivers: list[FakeDriver]):
    service = neo4j_runtime(
        "neo4j",
        spec_of("neo4j", backend="docker", isolation="database"),
        make_ctx(tmp_path),
    )
    service.start()
    drivers[0].rows = [{"address": "a", "state": "CREATING", "message": "", "success": False}]
    with pytest.raises(ServiceError, match="database lane1 not online after 30 s: CREATING"):
        service.provision(1, {})


# -- Neo4j: external -----------------------------------------------------------------------------


def external_neo4j(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolation: str, password: str | None
) -> tuple[Neo4jService, SimpleNamespace]:
    monkeypatch.setenv("NEO4J_TEST_URI", "neo4j+s://graph.example:7690")
    keys: dict[str, Any] = {"backend": "external", "url": "{env.NEO4J_TEST_URI}"}
    if password is not None:
        monkeypatch.setenv("NEO4J_TEST_PASSWORD", password)
        keys["password"] = "{env.NEO4J_TEST_PASSWORD}"
    ctx = make_ctx(tmp_path)
    spec = spec_of("neo4j", isolation=isolation, user="tester", **keys)
    return neo4j_runtime("neo4j", spec, ctx), ctx


def test_neo4j_external_shared_every_lane_gets_the_server_as_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drivers: list[FakeDriver]
):
    service, ctx = external_neo4j(tmp_path, monkeypatch, "shared", "hunter2hunter2")
    service.start()
    [probe] = drivers
    assert probe.url == "neo4j+s://graph.example:7690"
    assert probe.auth == ("tester", "hunter2hunter2")
    assert probe.queries == [(None, "RETURN 1")]
    assert ctx.secrets == ["hunter2hunter2"]
    one, two = service.provision(1, {}), service.provision(2, {})
    assert (
        one.values
        == two.values
        == {
            "url": "neo4j+s://graph.example:7690",
            "host": "graph.example",
            "port": "7690",
            "user": "tester",
            "password": "hunter2hunter2",
            "database": "neo4j",
        }
    )
    service.stop()
    assert len(drivers) == 1
    assert ctx.servers == []


def test_neo4j_external_without_password_uses_no_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drivers: list[FakeDriver]
):
    service, ctx = external_neo4j(tmp_path, monkeypatch, "none", None)
    service.start()
    assert drivers[0].auth is None
    assert service.provision(1, {}).values["password"] == ""
    assert ctx.secrets == []


def test_neo4j_external_databases_carry_the_run_id_and_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drivers: list[FakeDriver]
):
    service, _ = external_neo4j(tmp_path, monkeypatch, "database", "pw-pw-pw-pw")
    service.start()
    _probe, admin = drivers
    assert admin.auth == ("tester", "pw-pw-pw-pw")
    names = [service.provision(lane, {}).values["database"] for lane in (1, 2)]
    assert names == [f"testfleet-{RUN_ID}-lane1", f"testfleet-{RUN_ID}-lane2"]
    service.stop()
    assert [q for q in admin.queries if q[1].startswith("DROP")] == [
        ("system", f"DROP DATABASE `{names[0]}` IF EXISTS"),
        ("system", f"DROP DATABASE `{names[1]}` IF EXISTS"),
    ]
    assert admin.closed
    service.stop()
    assert len(admin.queries) == 4


def test_neo4j_external_drop_failure_does_not_stop_teardown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drivers: list[FakeDriver]
):
    service, _ = external_neo4j(tmp_path, monkeypatch, "database", "pw-pw-pw-pw")
    service.start()
    service.provision(1, {})
    drivers[1].failure = ConnectionError("gone")
    service.stop()
    assert drivers[1].closed


@pytest.mark.parametrize("url", ["http://graph.example:7474", "graph.example:7687", "bolt://"])
def test_neo4j_external_url_must_be_bolt(tmp_path: Path, drivers: list[FakeDriver], url: str):
    spec = spec_of("neo4j", backend="external", url=url, isolation="shared")
    with pytest.raises(ConfigError, match=r"services\.neo4j\.url: want bolt://"):
        neo4j_runtime("neo4j", spec, make_ctx(tmp_path)).start()
    assert drivers == []


def test_neo4j_without_driver_is_a_one_line_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "neo4j", None)
    with pytest.raises(ConfigError) as info:
        neo4j_runtime("graph", spec_of("neo4j"), make_ctx(tmp_path))
    assert info.value.message == (
        "tool.testfleet.services.graph: Neo4j needs the neo4j driver next to testfleet;"
        " pip install 'testfleet[neo4j]'"
    )


def test_external_password_placeholder_needs_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drivers: list[FakeDriver]
):
    monkeypatch.delenv("NEO4J_TEST_PASSWORD", raising=False)
    spec = spec_of(
        "neo4j",
        backend="external",
        url="bolt://g:7687",
        isolation="shared",
        password="{env.NEO4J_TEST_PASSWORD}",
    )
    with pytest.raises(ConfigError, match=r"neo4j\.password uses \{env\.NEO4J_TEST_PASSWORD\}"):
        neo4j_runtime("neo4j", spec, make_ctx(tmp_path)).start()


# -- the real drivers, against a port where nothing listens ----------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mongo_external_unreachable_ends_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int
):
    """The installed pymongo takes the client options as given, and the wait names it."""
    service, _ = external_mongo(
        tmp_path, monkeypatch, f"mongodb://u:pw@127.0.0.1:{closed_port}/app", start_timeout=0.3
    )
    with pytest.raises(ServiceError) as info:
        service.start()
    assert info.value.message.startswith(
        f"mongodb at 127.0.0.1:{closed_port} did not answer as ready in 0.3 s"
        " (last check: ServerSelectionTimeoutError"
    )


def test_neo4j_external_unreachable_ends_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int
):
    monkeypatch.setenv("NEO4J_TEST_PASSWORD", "pw-pw-pw-pw")
    spec = spec_of(
        "neo4j",
        backend="external",
        url=f"bolt://127.0.0.1:{closed_port}",
        password="{env.NEO4J_TEST_PASSWORD}",
        isolation="shared",
        start_timeout=0.3,
    )
    with pytest.raises(ServiceError) as info:
        neo4j_runtime("neo4j", spec, make_ctx(tmp_path)).start()
    assert info.value.message.startswith(
        f"neo4j at 127.0.0.1:{closed_port} did not answer as ready in 0.3 s"
        " (last check: ServiceUnavailable"
    )
