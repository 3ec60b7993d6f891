"""`backend = "docker"`: Valkey, Redis and NATS containers (of the local images, which start
like the official ones) take the run's credential from the config file copied in, so their
port published on 127.0.0.1 refuses `nobody`; `auth = false` serves it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testfleet.stack import Stack
from tests.docker.conftest import run_containers
from tests.service_auth import NATS, REDIS, VALKEY, Case, as_nobody, refused, served, stacks

pytestmark = [pytest.mark.docker]

IMAGES = {"valkey": "valkey", "redis": "redis", "nats": "nats"}
CASES = [pytest.param(case, id=case.service) for case in (VALKEY, REDIS, NATS)]


@pytest.fixture
def start(tmp_path: Path, local_images: dict[str, str]) -> Iterator[Callable[..., Stack]]:
    """Stacks whose services run in containers of the local images; none is left after."""
    made = stacks(tmp_path)
    make = next(made)
    run_dirs: list[str] = []

    def in_docker(case: Case, **spec: object) -> Stack:
        if IMAGES[case.service] not in local_images:
            pytest.skip(f"no local {case.service} image (its binary is not on this machine)")
        image = local_images[IMAGES[case.service]]
        stack = make({case.service: {"backend": "docker", "image": image, **spec}})
        run_dirs.append(str(stack.run.run_dir.path))
        return stack

    yield in_docker
    next(made, None)
    labels = [c.get("Labels", "") for c in run_containers()]
    assert [d for d in run_dirs if any(d in label for label in labels)] == [], "containers left"


@pytest.mark.parametrize("case", CASES)
def test_a_container_refuses_another_user_without_the_credential(
    start: Callable[..., Stack], case: Case
):
    """The published port answers `nobody` only with the credential the URL carries."""
    lane = start(case).provision(1)
    url, secret = lane.env[case.variable], lane.views[case.service].values[case.field]
    assert secret
    assert secret in url
    assert refused(case, as_nobody(case, url))
    assert served(case, as_nobody(case, url, secret))


@pytest.mark.parametrize("case", CASES)
def test_auth_false_container_serves_without_one(start: Callable[..., Stack], case: Case):
    lane = start(case, auth=False).provision(1)
    url = lane.env[case.variable]
    assert "@" not in url
    assert served(case, as_nobody(case, url))
