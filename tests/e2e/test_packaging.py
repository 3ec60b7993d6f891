"""testfleet as a release: `uv build` makes an sdist and, from it, a wheel, both with the
version of src/testfleet/__init__.py (its one source) and the metadata an index shows."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from testfleet import __version__
from tests.helpers import REPO

pytestmark = pytest.mark.e2e

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "src", "tests", "docs", "examples", "scripts")


def test_sdist_and_wheel_carry_one_version_and_the_metadata(tmp_path: Path):
    uv = shutil.which("uv", path=f"{Path(sys.executable).parent}")
    assert uv, "uv is missing: install testfleet's dev extra"
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(
                origin, source / name, ignore=shutil.ignore_patterns("__pycache__", ".testfleet")
            )
        else:
            shutil.copy(origin, source / name)
    (source / "bench").mkdir()
    (source / "bench" / "results.json").write_text("{}")  # not part of a release
    dist = tmp_path / "dist"
    # Without --wheel or --sdist, uv builds the sdist and then the wheel from it: the sdist
    # alone must be enough to build testfleet.
    subprocess.run(
        [uv, "build", "--out-dir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = dist / f"testfleet-{__version__}-py3-none-any.whl"
    sdist = dist / f"testfleet-{__version__}.tar.gz"
    built = sorted(p.name for p in dist.iterdir() if p.name.endswith((".whl", ".tar.gz")))
    assert built == sorted([wheel.name, sdist.name])
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(
            archive.read(f"testfleet-{__version__}.dist-info/METADATA")
        )
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.10"
    requires = metadata.get_all("Requires-Dist") or []
    assert any(r.startswith("coverage") for r in requires)
    assert "embedded" in (metadata.get_all("Provides-Extra") or [])
    assert f"testfleet-{__version__}.dist-info/licenses/LICENSE" in names
    assert "testfleet/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    root = f"testfleet-{__version__}"
    assert f"{root}/PKG-INFO" in members
    assert f"{root}/LICENSE" in members
    assert f"{root}/src/testfleet/__init__.py" in members
    assert not [m for m in members if m.startswith(f"{root}/bench")]
