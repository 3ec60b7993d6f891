"""`images build`, `prune` and the README's leftover check where no Docker engine answers
(DOCKER_HOST points at a socket nothing listens on): each says what it did or why not in one
line; nothing here reaches an engine."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from testfleet.backends.docker_engine import LABEL_HOST, LABEL_REUSE, LABEL_RUN, LABEL_UID
from testfleet.cli import main
from testfleet.images.recipes import IMAGE_TAGS, build_hint, recipe_for
from testfleet.rundir import LOCK_NAME, RunDir
from tests.helpers import REPO


@pytest.fixture
def no_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """DOCKER_HOST at a socket nothing listens on: no engine, whatever runs on this machine."""
    host = f"unix://{tmp_path}/no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


def test_images_build_of_a_kind_without_a_local_image_is_one_line(
    capsys: pytest.CaptureFixture[str],
):
    """MongoDB has no local image: the error names the kinds that have one, before any engine
    is asked."""
    assert main(["images", "build", "mongodb"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("testfleet: error: no local image of 'mongodb':")
    assert "postgres, valkey, redis, nats, vault" in err


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on this machine")
def test_images_build_without_an_engine_is_one_line(
    no_engine: str, capsys: pytest.CaptureFixture[str]
):
    """No engine: one line naming where it was asked and how to start one, not an error per
    image."""
    assert main(["images", "build", "valkey", "nats"]) == 3
    err = capsys.readouterr().err.strip()
    assert err == (
        f"testfleet: error: no Docker engine answers at {no_engine}; start dockerd (or Docker"
        " Desktop) and run this again"
    )


def test_images_need_an_action(capsys: pytest.CaptureFixture[str]):
    assert main(["images"]) == 2
    assert "ACTION" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("image", "recipe"),
    [
        ("postgres:18", "postgres"),
        ("valkey/valkey:8", "valkey"),
        ("openbao/openbao:latest", "openbao"),
        ("hashicorp/vault:1.15", "openbao"),
        ("testfleet-local/nats:2", "nats"),
        ("mongo:8", None),
        ("registry.example:5000/team/redis@sha256:abc", "redis"),
    ],
)
def test_the_local_image_that_stands_for_an_image(image: str, recipe: str | None):
    assert recipe_for(image) == recipe


def test_build_hints_name_the_command_or_the_pull():
    """A local tag: the command builds it. An official image: pull it, or build the local one
    and point `image` at it. No recipe: pull it."""
    assert build_hint(IMAGE_TAGS["postgres"]) == (
        "`testfleet images build postgres` builds it, or pull it"
    )
    official = build_hint("openbao/openbao:latest")
    assert "`testfleet images build vault` builds testfleet-local/openbao:2" in official
    assert 'set image = "testfleet-local/openbao:2"' in official
    assert build_hint("mongo:8").startswith("pull it (docker pull mongo:8)")


def test_prune_without_an_engine_removes_gone_runs_and_exits_0(
    no_engine: str, own_run_base: Path, capsys: pytest.CaptureFixture[str]
):
    """No engine means no kept containers to remove, said as skipped; the directories of runs
    that are gone are removed all the same, and live runs' are left alone; one line, exit 0."""
    gone = RunDir.create(own_run_base)
    os.close(gone._lock_fd)  # its process died: the lock is free
    live = RunDir.create(own_run_base)
    try:
        assert main(["prune"]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        lines = captured.out.strip().splitlines()
        assert len(lines) == 1
        assert re.fullmatch(
            f"kept containers: skipped, no Docker engine answers at {re.escape(no_engine)}"
            rf" \(\w+\); removed 1 directory of gone runs under {re.escape(str(own_run_base))}",
            lines[0],
        ), lines[0]
        assert not gone.path.exists()
        assert (live.path / LOCK_NAME).exists()
    finally:
        live.remove()


def readme_leftover_checks() -> list[str]:
    """The `docker ps` commands the README gives to see what testfleet left."""
    readme = (REPO / "README.md").read_text()
    return re.findall(r"`(docker ps [^`]*--filter label=[^`]+)`", readme)


def test_the_readme_leftover_check_finds_run_and_kept_containers():
    """Its label is one that a run's containers and kept containers (`reuse = true`) both
    carry (the docker backend's labels)."""
    checks = readme_leftover_checks()
    assert checks
    run_labels = {LABEL_RUN, LABEL_UID, LABEL_HOST}  # DockerBackend.labels()
    kept_labels = {LABEL_UID, LABEL_HOST, LABEL_REUSE}  # DockerBackend._claim_reused
    for check in checks:
        label = check.split("--filter label=", 1)[1].split()[0].split("=", 1)[0]
        assert label in run_labels & kept_labels, check
