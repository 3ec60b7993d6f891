"""`backend = "external"`: servers someone else runs (here another `testfleet up`), waited
for, isolated per lane, and left as they were found."""

from __future__ import annotations

import json
import re
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.helpers import EXAMPLE, run_cli, start_cli, wait_for, wait_until_up, write_pyproject

pytestmark = pytest.mark.e2e

EXTERNAL = {
    "[tool.testfleet.services.postgres]\n": (
        '[tool.testfleet.services.postgres]\nbackend = "external"\n'
        'url = "{env.SHARED_POSTGRES_URL}"\n'
    ),
    "[tool.testfleet.services.valkey]\n": (
        '[tool.testfleet.services.valkey]\nbackend = "external"\nurl = "{env.SHARED_VALKEY_URL}"\n'
    ),
}


def read_dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key] = value.strip("'\"")
    return values


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The example's stack, started by `testfleet up` as a developer or CI job would."""
    dotenv = tmp_path_factory.mktemp("up") / "env"
    up = start_cli(EXAMPLE, "up", "--dotenv", str(dotenv))
    try:
        wait_until_up(up)
        yield read_dotenv(dotenv)
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)


def external_copy(root: Path) -> Path:
    project = root / "bookshop"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".testfleet", "__pycache__"))
    text = (project / "pyproject.toml").read_text()
    for old, new in EXTERNAL.items():
        assert old in text
        text = text.replace(old, new)
    (project / "pyproject.toml").write_text(text)
    return project


def databases(url: str) -> set[str]:
    """The server's databases but the up's own lanes (it makes its warm lane in the
    background, so that one may appear at any time)."""
    with psycopg.connect(url) as conn:
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    return {name for name in names if not re.fullmatch(r"bookshop_\d+", name)}


def test_example_passes_on_external_postgres_and_valkey(
    tmp_path: Path, shared_stack: dict[str, str]
):
    """Four lanes on one external PostgreSQL and one external Valkey: the example's tests,
    which fail when lanes see each other's data, pass; afterwards the server has exactly the
    databases and keys it had before."""
    pg_url, valkey_url = shared_stack["POSTGRES_URL"], shared_stack["VALKEY_URL"]
    # DB 15 is beyond the four lanes' DB numbers (0-3); testfleet flushes none of them.
    cache = redis.Redis.from_url(valkey_url.rsplit("/", 1)[0] + "/15")
    cache.set("owned-by-someone-else", "keep")
    before = databases(pg_url)
    project = external_copy(tmp_path)
    env = {"SHARED_POSTGRES_URL": pg_url, "SHARED_VALKEY_URL": valkey_url}
    result = run_cli("run", "-n", "4", cwd=project, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "36 passed" in result.stderr
    assert databases(pg_url) == before
    assert cache.get("owned-by-someone-else") == b"keep"


def test_unset_url_variable_is_one_line(tmp_path: Path):
    project = external_copy(tmp_path)
    result = run_cli("run", cwd=project, env={"SHARED_VALKEY_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "testfleet: error: tool.testfleet.services.postgres.url uses"
        " {env.SHARED_POSTGRES_URL}, and SHARED_POSTGRES_URL is not set"
    )
    assert "Traceback" not in result.stderr


def test_external_server_that_never_answers_is_named(tmp_path: Path):
    write_pyproject(
        tmp_path,
        '[tool.testfleet.services.valkey]\nbackend = "external"\n'
        'url = "redis://127.0.0.1:1/0"\nstart-timeout = 0.5\n',
    )
    (tmp_path / "test_x.py").write_text("def test_x(): pass\n")
    result = run_cli("run", cwd=tmp_path)
    assert result.returncode != 0
    assert "valkey at 127.0.0.1:1 did not answer as ready in 0.5 s" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_external_nats_refuses_two_lanes(tmp_path: Path):
    write_pyproject(
        tmp_path, '[tool.testfleet.services.nats]\nbackend = "external"\nurl = "nats://x:4222"\n'
    )
    result = run_cli("run", "-n", "2", cwd=tmp_path)
    assert result.returncode == 2
    assert "one external NATS server cannot keep 2 lanes apart" in result.stderr
    assert 'isolation = "shared"' in result.stderr


def test_docker_only_keys_on_a_native_service_are_refused(tmp_path: Path):
    """Only where the service's own table names another backend: no option can switch it."""
    write_pyproject(
        tmp_path,
        '[tool.testfleet.services.postgres]\nbackend = "native"\nimage = "postgres:17"\n',
    )
    result = run_cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert 'postgres.image is read with backend = "docker" only' in result.stderr


def vault_mounts(addr: str, token: str) -> set[str]:
    request = urllib.request.Request(f"{addr}/v1/sys/mounts", headers={"X-Vault-Token": token})
    with urllib.request.urlopen(request, timeout=10) as response:
        return {name.rstrip("/") for name in json.load(response)["data"]}


def test_sigkill_of_testfleet_still_drops_what_it_made(
    tmp_path: Path, shared_stack: dict[str, str]
):
    """The lanes' databases and Vault mounts on external servers are written down before
    they are made; after a SIGKILL of testfleet its reaper drops them."""
    pg_url, addr, token = (
        shared_stack["POSTGRES_URL"],
        shared_stack["VAULT_ADDR"],
        shared_stack["VAULT_TOKEN"],
    )
    before_dbs, before_mounts = databases(pg_url), vault_mounts(addr, token)
    write_pyproject(
        tmp_path,
        '[tool.testfleet.services.postgres]\nbackend = "external"\nurl = "{env.EXT_PG}"\n'
        '[tool.testfleet.services.vault]\nbackend = "external"\nurl = "{env.EXT_VAULT}"\n'
        'token = "{env.EXT_TOKEN}"\n',
    )
    (tmp_path / "test_hang.py").write_text(
        "import os, pathlib, time\n"
        "import pytest\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_hang(i):\n"
        "    pathlib.Path(f'started-{os.environ[\"TESTFLEET_LANE\"]}').touch()\n"
        "    time.sleep(120)\n"
    )
    env = {"EXT_PG": pg_url, "EXT_VAULT": addr, "EXT_TOKEN": token}
    run = start_cli(tmp_path, "run", "-n", "2", "--group-by", "test", env=env)
    try:
        wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 2, timeout=60, what="lanes")
        made = databases(pg_url) - before_dbs
        assert len(made) == 3  # the template and two lanes
        assert len(vault_mounts(addr, token) - before_mounts) == 2
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=30)
        wait_for(lambda: databases(pg_url) == before_dbs, timeout=60, what="databases dropped")
        wait_for(
            lambda: vault_mounts(addr, token) == before_mounts, timeout=60, what="mounts removed"
        )
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()
