"""Docker settings in a project's config: kept for when a service runs in Docker, whichever
layer (the file, the env var, the flag) chooses that backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from testfleet.errors import ConfigError
from testfleet.project import load_project
from tests.helpers import write_pyproject

IMAGES = """
[tool.testfleet.services.postgres]
image = "testfleet-local/postgres:18"
limits = { memory = "512m" }
reuse = true

[tool.testfleet.services.valkey]
image = "testfleet-local/valkey:8"
"""


@pytest.mark.parametrize("layer", ["default", "env", "flag"])
def test_named_images_do_not_stop_a_native_run(tmp_path: Path, layer: str):
    """A project that names its images runs natively by default, and a file whose run
    backend is docker switches to native with TESTFLEET_BACKEND=native or --backend native."""
    body = IMAGES if layer == "default" else '[tool.testfleet]\nbackend = "docker"\n' + IMAGES
    write_pyproject(tmp_path, body)
    environ = {"TESTFLEET_BACKEND": "native"} if layer == "env" else {}
    cli = {"backend": "native"} if layer == "flag" else {}
    config = load_project(tmp_path, cli=cli, environ=environ).config
    assert {s.backend_name for s in config.services.values()} == {"native"}


@pytest.mark.parametrize("layer", ["env", "flag", "file"])
def test_backend_docker_switches_a_project_that_names_its_images(tmp_path: Path, layer: str):
    """TESTFLEET_BACKEND=docker, --backend docker or the file's own backend = "docker" run the
    services in the images the config names."""
    body = IMAGES if layer != "file" else '[tool.testfleet]\nbackend = "docker"\n' + IMAGES
    write_pyproject(tmp_path, body)
    environ = {"TESTFLEET_BACKEND": "docker"} if layer == "env" else {}
    cli = {"backend": "docker"} if layer == "flag" else {}
    config = load_project(tmp_path, cli=cli, environ=environ).config
    postgres = config.services["postgres"]
    assert postgres.backend_name == "docker"
    assert getattr(postgres, "image", None) == "testfleet-local/postgres:18"
    assert getattr(config.services["valkey"], "image", None) == "testfleet-local/valkey:8"


def test_an_image_on_a_service_that_names_another_backend_is_refused(tmp_path: Path):
    """A service whose own table says backend = "native" never runs in Docker: its image is a
    contradiction, named in one line with the fix."""
    write_pyproject(
        tmp_path,
        '[tool.testfleet.services.postgres]\nbackend = "native"\nimage = "postgres:17"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path, cli={"backend": "docker"}, environ={})
    message = info.value.message
    assert "\n" not in message
    assert 'postgres.image is read with backend = "docker" only' in message
    assert 'set tool.testfleet.services.postgres.backend = "docker"' in message
