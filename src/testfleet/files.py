"""Files and directories that must be ours alone: secrets, logs, shared places like /dev/shm.

testfleet often runs as root in CI containers, next to other local users. Anything it reuses
in a world-writable place (`/dev/shm`, `/var/tmp`) must be a directory it made itself, so that
no one else can plant data, links or fake process records there.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from pathlib import Path

from testfleet.errors import ConfigError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
# Enterable but not listable by others: PostgreSQL runs as another account under root and
# must walk through to its own data directory.
TRAVERSABLE_DIR = 0o711


def staging_name(path: Path) -> Path:
    """A sibling temp name unique to this process and thread, for atomic replacement."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """The one writer of files that other processes read or that several write: a temp file
    beside `path`, renamed over it, so a reader sees the old file or the new one, never half
    of one. Never through a link; the temp file goes if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_name(path)
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 600, replacing it atomically."""
    write_atomic(path, text.encode("utf-8"), mode=PRIVATE_FILE)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """A file descriptor for a log or record only this user may read; never through a link."""
    return os.open(path, flags | os.O_NOFOLLOW, PRIVATE_FILE)


def private_dir(path: Path, mode: int = PRIVATE_DIR) -> Path:
    """mkdir with an exact mode (the umask would loosen or tighten it); exists is fine."""
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        return path
    os.chmod(path, mode)
    return path


def unsafe_reason(path: Path, *, uid: int | None = None) -> str | None:
    """Why `path` cannot be trusted as our own directory, or None when it can."""
    uid = os.geteuid() if uid is None else uid
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "it does not exist"
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if info.st_uid != uid:
        return f"it is owned by uid {info.st_uid}, not by uid {uid} (this user)"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def secure_dir(
    path: Path,
    mode: int = PRIVATE_DIR,
    *,
    what: str = "directory",
    instead: str = "set run-dir to a directory of your own",
) -> Path:
    """Create `path` as this user's with `mode`, or accept an existing one only when it is a
    real directory owned by this user that no one else may write to.

    In a sticky world-writable parent (`/dev/shm`, `/var/tmp`) no other user can rename or
    remove what we own, so a directory that passes this check stays ours.
    """
    parent = path.parent
    parent_info = os.stat(parent) if parent.exists() else None
    if parent_info is not None and (
        parent_info.st_mode & stat.S_IWOTH and not parent_info.st_mode & stat.S_ISVTX
    ):
        raise ConfigError(
            f"{what} {path}: its parent {parent} is writable by every user without the sticky"
            " bit, so others could replace it; choose a directory under one you own"
        )
    try:
        os.mkdir(path, mode)
        os.chmod(path, mode)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot create it ({exc.strerror})") from None
    reason = unsafe_reason(path)
    if reason is not None:
        raise ConfigError(
            f"{what} {path} cannot be trusted: {reason}; another local user may have"
            f" created it. Remove it (rm -rf {path}) or {instead}"
        )
    if stat.S_IMODE(os.lstat(path).st_mode) != mode:
        os.chmod(path, mode)
    return path


def machine_dir() -> Path:
    """Where this user keeps what outlives a run on this machine (copies of an install, the
    credentials of reused containers): on disk, not tmpfs. The caller secures it."""
    var_tmp = Path("/var/tmp")
    root = var_tmp if var_tmp.is_dir() else Path(tempfile.gettempdir())
    return root / f"testfleet-{os.geteuid()}"
