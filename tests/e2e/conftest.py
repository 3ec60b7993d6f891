"""Fixtures of the generated-CI tests: testfleet as a release, and a lab to run CI in."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.ci_lab import Lab, Release, machine_environ
from tests.e2e.github_runner import Stores


@pytest.fixture
def lab(tmp_path: Path, release: Release) -> Iterator[Lab]:
    work = tmp_path / "work"
    (work / "uv-cache").mkdir(parents=True)
    # Short: PostgreSQL's and the lanes' unix sockets live under it (107 bytes at most).
    run_dirs = Path(tempfile.mkdtemp(prefix="tf-", dir="/tmp"))
    yield Lab(
        origin=tmp_path / "origin",
        work=work,
        env=machine_environ(release.index, run_dirs),
        pythons={},
        release=release,
        stores=Stores(tmp_path / "stores"),
    )
    left = list(run_dirs.iterdir())
    shutil.rmtree(run_dirs)
    assert not left, f"runs left {left}"
