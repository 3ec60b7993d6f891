"""Docker where no registry answers: `testfleet images build` makes the local images,
`testfleet doctor` says which image of a docker service is missing before a run stops on it,
and the README's leftover check finds kept containers too."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.docker.conftest import kept_by, remove_containers
from tests.helpers import run_cli, write_pyproject
from tests.unit.test_docker_commands import readme_leftover_checks

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def on_engine(image: str) -> bool:
    done = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, timeout=60, check=False
    )
    return done.returncode == 0


def test_images_build_makes_or_keeps_the_local_images(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    """The builder is a command of the installed package: one line an image, exit 0. Another
    copy of the suite may build at the same moment: the builders take turns (builder_lock),
    and either may be the one that built, so both words are right."""
    result = run_cli("images", "build", "valkey", "nats", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    for kind, tag in (("valkey", "testfleet-local/valkey:8"), ("nats", "testfleet-local/nats:2")):
        assert re.search(
            rf"^{kind}\s+{re.escape(tag)}\s+(up to date|built) in ", result.stdout, re.M
        )
        assert on_engine(tag)
    assert "Traceback" not in result.stderr


def test_doctor_says_which_docker_images_are_missing(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    """TESTFLEET_BACKEND=docker on a project that names its images: doctor checks each one on
    the engine (nothing is pulled), names the missing ones with how to get them, exits 1."""
    if on_engine("postgres:18"):
        pytest.skip("the engine has postgres:18; this test needs an image it lacks")
    write_pyproject(
        tmp_path,
        f"""[tool.testfleet.services.postgres]

[tool.testfleet.services.valkey]
image = "{local_images["valkey"]}"

[tool.testfleet.services.nats]
image = "testfleet-local/nats:0"
""",
    )
    result = run_cli("doctor", cwd=tmp_path, env={"TESTFLEET_BACKEND": "docker"}, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {
        line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
        for line in result.stdout.splitlines()
        if "  " in line
    }
    assert rows["postgres (configured)"] == (
        "runs in docker: image postgres:18 not present; pull it where a registry answers, or"
        " `testfleet images build postgres` builds testfleet-local/postgres:18 from this"
        ' machine\'s binaries (then set image = "testfleet-local/postgres:18")'
    )
    assert rows["valkey (configured)"] == f"runs in docker: image {local_images['valkey']} present"
    assert rows["nats (configured)"].startswith(
        "runs in docker: image testfleet-local/nats:0 not present;"
    )
    assert "docker ready (image postgres:18 not present)" in rows["postgres"]


def test_the_readme_leftover_check_lists_kept_containers(
    tmp_path: Path, local_images: dict[str, str], own_run_base: Path
):
    """After a run with `reuse = true`, the README's command to see what testfleet left shows
    the kept container (it carries no run's label)."""
    write_pyproject(
        tmp_path,
        f"""[tool.testfleet.services.valkey]
backend = "docker"
image = "{local_images["valkey"]}"
reuse = true
""",
    )
    (tmp_path / "test_x.py").write_text("def test_x(): pass\n")
    try:
        result = run_cli("run", "-n", "1", cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr
        # This project's, so never another copy's of the suite sharing the engine.
        (ours,) = [c["Names"] for c in kept_by(tmp_path)]
        checks = readme_leftover_checks()
        assert checks
        for check in checks:
            shown = subprocess.run(
                shlex.split(check), capture_output=True, text=True, timeout=60, check=True
            ).stdout
            assert ours in shown, check
    finally:
        remove_containers(kept_by(tmp_path))
