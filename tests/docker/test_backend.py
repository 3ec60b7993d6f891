"""`backend = "docker"` end to end, against a real engine: the example's suite in containers,
and no container left behind after a pass, a failing start, Ctrl-C or SIGKILL of testfleet.

Another copy of this suite may share the engine (two checkouts, two CI jobs on one machine):
each test looks only at the containers of its own runs (their run-dir base is the test's own)
and at its own project's kept containers, never at every container of testfleet's."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from testfleet.backends.docker_engine import host_key
from testfleet.up.dotenv import read_dotenv
from tests.docker.conftest import containers_under, kept_by, remove_containers, run_containers
from tests.helpers import EXAMPLE, run_cli, start_cli, wait_for, wait_until_up, write_pyproject

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

SERVICES = {"postgres": "postgres", "valkey": "valkey", "nats": "nats", "vault": "openbao"}


def docker_copy(root: Path, images: dict[str, str]) -> Path:
    """The example project with every server in a container of a local image."""
    project = root / "bookshop"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".testfleet", "__pycache__"))
    text = (project / "pyproject.toml").read_text()
    text = text.replace("[tool.testfleet]\n", '[tool.testfleet]\nbackend = "docker"\n', 1)
    for name, kind in SERVICES.items():
        table = f"[tool.testfleet.services.{name}]\n"
        assert table in text
        text = text.replace(table, f'{table}image = "{images[kind]}"\n')
    (project / "pyproject.toml").write_text(text)
    return project


def test_example_passes_with_every_service_in_docker(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    """Four lanes, each with its own containers (one PostgreSQL container with a database per
    lane): the example's tests, which fail when lanes share data, pass; nothing is left."""
    project = docker_copy(tmp_path, local_images)
    result = run_cli("run", "-n", "4", cwd=project, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "36 passed" in result.stderr
    assert containers_under(own_run_base) == []


def valkey_project(root: Path, image: str, extra: str = "") -> Path:
    write_pyproject(
        root,
        f'[tool.testfleet.services.valkey]\nbackend = "docker"\nimage = "{image}"\n{extra}',
    )
    (root / "test_x.py").write_text("def test_x(): pass\n")
    return root


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_container_outlives_testfleet(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path, how: signal.Signals
):
    """`up` with containers running, then Ctrl-C, SIGTERM or SIGKILL of testfleet itself: its
    teardown, or its reaper when it cannot run one, removes them by the run's label."""
    project = valkey_project(tmp_path, local_images["valkey"])
    up = start_cli(project, "up")
    try:
        wait_until_up(up)
        # The developer's lane and the lane kept warm for runs: a container each.
        wait_for(
            lambda: sum("127.0.0.1:" in c["Ports"] for c in containers_under(own_run_base)) == 2,
            timeout=60,
            what="the warm lane's container to publish its port",
        )
        running = containers_under(own_run_base)
        assert all("127.0.0.1:" in c["Ports"] and "0.0.0.0" not in c["Ports"] for c in running)
        up.send_signal(how)
        up.communicate(timeout=60)
        wait_for(
            lambda: containers_under(own_run_base) == [], timeout=60, what="containers removed"
        )
    finally:
        if up.poll() is None:
            up.kill()
        up.communicate()


def test_container_that_exits_while_starting_is_named_and_removed(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    project = valkey_project(
        tmp_path, local_images["valkey"], "settings = { no-such-directive = 'x' }\n"
    )
    result = run_cli("run", cwd=project, timeout=120)
    assert result.returncode != 0
    assert "valkey (lane 1) exited with code 1 while starting; its log:" in result.stderr
    assert "no-such-directive" in result.stderr  # the log's own words are shown
    assert "Traceback" not in result.stderr
    assert containers_under(own_run_base) == []


def test_missing_image_is_one_line(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    """An image that is neither on the engine nor pullable: one line with the fix, and the
    engine's reason whole under it (a registry's answer ends with its point), never cut."""
    image = "testfleet-local/no-such-image:0"
    project = valkey_project(tmp_path, image)
    result = run_cli("run", cwd=project, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    error = next(line for line in lines if line.startswith("testfleet: error: "))
    assert f"image {image} is not on this engine and could not be pulled; pull it" in error
    # What the docker client says of the same pull is in the output whole.
    pulled = subprocess.run(
        ["docker", "pull", image], capture_output=True, text=True, timeout=120, check=False
    )
    assert pulled.returncode != 0
    reason = pulled.stderr.strip().splitlines()[-1].removeprefix("Error response from daemon: ")
    assert f"    the engine said: {reason}" in lines
    assert "Traceback" not in result.stderr
    assert containers_under(own_run_base) == []


REUSE_SUITE = """
import os, psycopg, redis

def test_starts_empty_and_writes():
    cache = redis.Redis.from_url(os.environ["VALKEY_URL"])
    assert cache.dbsize() == 0, "a kept container was not emptied"
    cache.set("left", "behind")
    with psycopg.connect(os.environ["POSTGRES_URL"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        conn.execute("INSERT INTO items VALUES (1)")
"""


def test_reused_containers_are_kept_emptied_and_pruned(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    """`reuse = true`: the second run gets the first run's containers (same ids), emptied
    and with setup run again; `testfleet prune` removes them once no run holds them. The kept
    containers are this project's: another project's (another copy of this suite's, idle
    between its runs) are neither handed to these runs nor pruned by this prune."""
    create = (
        "import os, psycopg; conn = psycopg.connect(os.environ['POSTGRES_URL']);"
        " conn.execute('CREATE TABLE items (id int)'); conn.commit()"
    )
    write_pyproject(
        tmp_path,
        f"""[tool.testfleet]
backend = "docker"

[tool.testfleet.services.postgres]
image = "{local_images["postgres"]}"
reuse = true
setup = ["python", "-c", "{create}"]

[tool.testfleet.services.valkey]
image = "{local_images["valkey"]}"
reuse = true
password = true
""",
    )
    (tmp_path / "test_reuse.py").write_text(REUSE_SUITE)
    try:
        first = run_cli("run", "-n", "2", cwd=tmp_path, timeout=300)
        assert first.returncode == 0, first.stderr
        after_first = sorted(c["ID"] for c in kept_by(tmp_path))
        assert len(after_first) == 3  # one PostgreSQL, a Valkey per lane
        assert containers_under(own_run_base) == []  # nothing with a run's label stays
        second = run_cli("run", "-n", "2", cwd=tmp_path, timeout=300)
        assert second.returncode == 0, second.stderr
        assert sorted(c["ID"] for c in kept_by(tmp_path)) == after_first
        pruned = run_cli("prune", cwd=tmp_path, timeout=120)
        assert pruned.returncode == 0, pruned.stderr
        assert f"removed 3 kept container(s) of {tmp_path.resolve()} (" in pruned.stdout
        assert kept_by(tmp_path) == []
    finally:
        remove_containers(kept_by(tmp_path))  # a failure above must not leave them


def test_prune_removes_only_its_own_projects_kept_containers(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    """Two projects with the same kept Valkey (the same description but for the project):
    each gets a container of its own, and `testfleet prune` in one leaves the other's."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for root in (ours, theirs):
        valkey_project(root, local_images["valkey"], "reuse = true\nauth = false\n")
    try:
        for root in (ours, theirs):
            result = run_cli("run", "-n", "1", cwd=root, timeout=300)  # one lane: one Valkey
            assert result.returncode == 0, result.stderr
        (our,), (their,) = kept_by(ours), kept_by(theirs)
        assert our["ID"] != their["ID"]
        pruned = run_cli("prune", cwd=ours, timeout=120)
        assert pruned.returncode == 0, pruned.stderr
        assert f"removed 1 kept container(s) of {ours.resolve()} ({our['Names']})" in pruned.stdout
        assert kept_by(ours) == []
        assert [c["ID"] for c in kept_by(theirs)] == [their["ID"]]
    finally:
        remove_containers(kept_by(ours) + kept_by(theirs))


def test_container_that_dies_under_up_is_named(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    """A container killed while the stack serves (the OOM killer, a crash) ends `up` with its
    name and log, as a native server's death does."""
    project = valkey_project(tmp_path, local_images["valkey"])
    up = start_cli(project, "up")
    try:
        wait_until_up(up)
        # Lane 1's container, by the port of its URL in the env file: the lane kept warm for
        # runs has a container too, started in the background.
        port = urlsplit(read_dotenv(project / ".testfleet" / "env")["VALKEY_URL"]).port
        published = f"127.0.0.1:{port}->"
        (container,) = [c for c in containers_under(own_run_base) if published in c["Ports"]]
        subprocess.run(["docker", "kill", container["ID"]], check=True, capture_output=True)
        _, stderr = up.communicate(timeout=60)
        assert up.returncode != 0
        assert "service valkey (lane 1) exited unexpectedly" in stderr
        wait_for(
            lambda: containers_under(own_run_base) == [], timeout=60, what="containers removed"
        )
    finally:
        if up.poll() is None:
            up.kill()
        up.communicate()


def test_orphans_of_other_machines_sharing_the_engine_are_left_alone(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    """A container of this user whose run directory is missing here is an orphan only when
    this machine made it: CI jobs sharing one engine each keep their own."""
    run_id = f"elsewhere-{secrets.token_hex(4)}"  # the test's own: another copy has another
    labels = {
        "testfleet.run": run_id,
        "testfleet.run-dir": "/nonexistent/run",
        "testfleet.uid": str(os.getuid()),
    }
    made = {}
    try:
        for host in ("another-machine/boot", host_key()):
            args = [f"--label={k}={v}" for k, v in {**labels, "testfleet.host": host}.items()]
            out = subprocess.run(
                ["docker", "create", *args, local_images["valkey"]],
                check=True,
                capture_output=True,
                text=True,
            )
            made[host] = out.stdout.strip()
        project = valkey_project(tmp_path, local_images["valkey"])
        result = run_cli("run", cwd=project, timeout=120)
        assert result.returncode == 0, result.stderr
        left = {c["ID"] for c in run_containers(f"testfleet.run={run_id}")}
        assert made["another-machine/boot"][:12] in left
        assert made[host_key()][:12] not in left
    finally:
        subprocess.run(["docker", "rm", "-f", *made.values()], capture_output=True, check=False)
