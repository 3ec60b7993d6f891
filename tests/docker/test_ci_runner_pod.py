"""The generated GitHub workflow, run inside a container that looks like a self-hosted
Kubernetes runner pod: 64 MB /dev/shm (Docker's and Kubernetes' default), a non-root uid
(1001, the runner image's), every capability dropped, no new privileges, no Docker socket.

The image is a root filesystem of a few directories and a passwd entry for the runner,
imported with `docker import` (nothing can be pulled here); the machine's /usr and the Python
installations are mounted read-only, as a runner image brings its own. Inside, the workflow
runner of tests/e2e/github_runner.py (standard library only) runs every job of the workflow
that the testfleet release wrote, installing that release by its pinned spec from a local
index, with PostgreSQL and Valkey for services: PostgreSQL as the runner's own user, its data
where /dev/shm has no room for it.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from testfleet import __version__
from tests.e2e import github_runner
from tests.e2e.ci_lab import (
    FILES,
    RUNNING,
    Release,
    commit,
    load,
    make_origin,
    outcomes,
    push_event,
)

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

IMAGE = "testfleet-test/ci-runner-pod"  # tagged per test: see pod_image
RUNNER_UID = 1001
POD_TIMEOUT = 1800
CERTIFICATES = ("_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
PROXIES = ("http_proxy", "https_proxy", "no_proxy")

ORDERS = """\
import os

import psycopg


def test_orders_table_is_empty_in_every_lane():
    with psycopg.connect(os.environ["POSTGRES_URL"]) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id serial, item text)")
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        conn.execute("INSERT INTO orders (item) VALUES ('book')")


def test_an_order_reads_back():
    with psycopg.connect(os.environ["POSTGRES_URL"]) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id serial, item text)")
        conn.execute("INSERT INTO orders (item) VALUES ('pen')")
        assert conn.execute("SELECT item FROM orders WHERE item = 'pen'").fetchone() == ("pen",)
"""

PYPROJECT = """\
[project]
name = "tinyshop"
version = "0"
requires-python = ">=3.10"
dependencies = ["pytest>=8", "psycopg[binary]>=3.1"]

[tool.pytest.ini_options]
pythonpath = ["."]

[tool.testfleet]
pytest-args = ["-q"]
coverage = true
coverage-fail-under = 50

[tool.testfleet.services.postgres]
[tool.testfleet.services.valkey]
"""


def rootfs() -> bytes:
    """The image: the directories a Debian runner has, /usr's layout, the runner's account."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def directory(name: str, mode: int = 0o755, owner: int = 0) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, owner, owner
            tar.addfile(info)

        def link(name: str, target: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)

        def text(name: str, content: str) -> None:
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        for name in ("usr", "etc", "home", "root", "opt", "proc", "sys", "dev", "run", "var"):
            directory(name)
        for name in ("tmp", "var/tmp"):
            directory(name, 0o1777)
        directory("home/runner", 0o755, RUNNER_UID)
        for name in ("bin", "lib", "lib64", "sbin"):
            link(name, f"usr/{name}")
        text(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\n"
            f"runner:x:{RUNNER_UID}:{RUNNER_UID}:runner:/home/runner:/bin/bash\n",
        )
        text("etc/group", f"root:x:0:\nrunner:x:{RUNNER_UID}:\n")
        text("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n")
    return buffer.getvalue()


def docker(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["docker", *args], input=data, capture_output=True, timeout=120, check=False
    )


@pytest.fixture
def pod_image(local_images: dict[str, str]) -> Any:
    """The runner pod's image, imported for this test and removed after it. Its tag is the
    test's own: another copy of the suite sharing the engine imports and removes its own,
    never this one's while this pod runs."""
    tag = f"{IMAGE}:{secrets.token_hex(6)}"
    made = docker("import", "--change", "USER 1001", "-", tag, data=rootfs())
    assert made.returncode == 0, made.stderr
    yield tag
    docker("rmi", "-f", tag)


def chown_tree(root: Path, uid: int) -> None:
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), uid, uid)
    os.chown(root, uid, uid)


def test_the_workflow_runs_in_a_ci_runner_pod(
    pod_image: str, release: Release, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("preparing the pod's files for uid 1001 needs root")
    pod = tmp_path / "pod"
    origin = make_origin(pod / "origin", {**FILES, "tests/test_orders.py": ORDERS}, PYPROJECT)
    written = release.testfleet("ci", "github", "--python", RUNNING, "--shards", "2", cwd=origin)
    assert written.returncode == 0, written.stderr
    spec = f"testfleet[postgres,valkey]=={__version__}"
    workflow_text = (origin / ".github/workflows/tests.yml").read_text()
    assert f'SPEC: "{spec}"' in workflow_text
    commit(origin, "project with its generated workflow")
    shutil.copytree(release.index, pod / "index")
    shutil.copy(github_runner.__file__, pod / "github_runner.py")
    (pod / "bin").mkdir()
    shutil.copy(release.uv, pod / "bin" / "uv")
    python_home = Path(sys.base_prefix)
    environ = {
        "HOME": "/home/runner",
        "LANG": "C.UTF-8",
        "UV_FIND_LINKS": "/pod/index",
        "UV_PYTHON_DOWNLOADS": "never",
        **{
            k: v
            for k, v in os.environ.items()
            if k.endswith(("_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"))
        },
        **{
            k: v
            for k, v in os.environ.items()
            if k.lower() in ("http_proxy", "https_proxy", "no_proxy")
        },
    }
    job_spec = {
        "workflow": load(origin / ".github/workflows/tests.yml"),
        "origin": "/pod/origin",
        "work": "/pod/work",
        "report": "/pod/report.json",
        "env": environ,
        "pythons": {RUNNING: str(python_home / "bin")},
        "uv": "/pod/bin/uv",
        "uv_cache": "/pod/uv-cache",
        "event": push_event("main"),
        "run_id": 1,
    }
    (pod / "work").mkdir()
    (pod / "uv-cache").mkdir()
    (pod / "spec.json").write_text(json.dumps(job_spec))
    chown_tree(pod, RUNNER_UID)
    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--shm-size",
            "64m",
            "--user",
            f"{RUNNER_UID}:{RUNNER_UID}",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--volume",
            "/usr:/usr:ro",
            "--volume",
            "/etc/ssl:/etc/ssl:ro",
            "--volume",
            "/etc/resolv.conf:/etc/resolv.conf:ro",
            "--volume",
            f"{python_home}:{python_home}:ro",
            "--volume",
            f"{pod}:/pod",
            "--workdir",
            "/pod",
            "--env",
            "HOME=/home/runner",
            pod_image,
            str(python_home / "bin" / "python3"),
            "/pod/github_runner.py",
            "/pod/spec.json",
        ],
        capture_output=True,
        text=True,
        timeout=POD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = json.loads((pod / "report.json").read_text())
    log = "\n".join(job["described"] for job in jobs)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        by_name.setdefault(job["job"], []).append(job)
    assert len(by_name["test"]) == 2, log
    for shard in by_name["test"]:
        steps = {name: code for name, ran, code in shard["steps"] if ran}
        assert steps["Install testfleet"] == 0, log
        assert steps["Run this shard"] in (0, 1), log
        output = shard["outputs"]["Run this shard"]
        assert "internal error" not in output, output
        # 64 MB of /dev/shm is less than PostgreSQL's data: said once, kept on disk.
        assert output.count("run data goes to /tmp/testfleet-1001 on disk instead") == 1, output
        print(f"\n--- shard {shard['matrix']} in the pod:\n{output[-1500:]}")
    (merge,) = by_name["merge"]
    merge_steps = {name: code for name, ran, code in merge["steps"] if ran}
    assert merge_steps["Merge the shards"] == 1, log  # the failing test, and only that
    assert "TOTAL coverage: " in merge["outputs"]["Merge the shards"], log
    merged = outcomes(
        Path(str(pod) + merge["workspace"].removeprefix("/pod")) / ".testfleet/junit.xml"
    )
    assert len(merged) == 13, log
    failed = [key for key, outcome in merged.items() if outcome == "failure"]
    assert [name for _, _, name in failed] == ["test_fails_on_purpose"], log
