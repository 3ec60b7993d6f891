"""`run --with mongodb` (or neo4j) on a machine with no such server: one line naming what
provides a server (a binary on PATH, Docker, an external URL), never the pip extra, which
holds only the driver and is installed here already."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import run_cli, write_pyproject

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("kind", "binary"), [("mongodb", "mongod"), ("neo4j", "neo4j")])
def test_missing_server_names_what_provides_one(
    tmp_path: Path, own_run_base: Path, kind: str, binary: str
):
    """Exit 2 with the ways to a server; the installed driver's extra is not suggested."""
    if shutil.which(binary):
        pytest.skip(f"{binary} is on PATH here")
    root = write_pyproject(tmp_path / "p", "")
    (root / "test_a.py").write_text("def test_a():\n    pass\n")
    done = run_cli("run", "--with", kind, cwd=root)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"testfleet: error: tool.testfleet.services.{kind}: no ")
    assert "pip install" not in line
    assert f"(testfleet[{kind}] is the" in line
    assert 'backend = "docker"' in line
    assert 'backend = "external" with url = "{env.' in line
    assert list(own_run_base.iterdir()) == []
