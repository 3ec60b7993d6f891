"""A local image's root filesystem: files from this machine (with the shared libraries `ldd`
names for them), generated files, directories and links, written as one tar stream for
`docker import`, and the digest of what it holds."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

from testfleet.errors import TestfleetError
from testfleet.images.entrypoints import NSSWITCH

SERVICE_UID = 999  # the service user of the official images (postgres, valkey, redis)
DASH = Path("/usr/bin/dash")


class BuildError(TestfleetError):
    """An image could not be built (a binary, a library or the engine is missing)."""


@dataclass(frozen=True)
class Entry:
    path: str  # inside the image, without the leading slash
    kind: Literal["dir", "file", "symlink"]
    mode: int
    uid: int = 0
    gid: int = 0
    source: Path | None = None  # a file copied from this machine
    data: bytes | None = None  # a generated file
    target: str | None = None  # a symlink's target


def _image_path(host_path: str) -> str:
    """A host path in the image's merged-/usr layout (/lib, /lib64, /bin, /sbin are links)."""
    path = os.path.normpath(host_path).lstrip("/")
    top, _, rest = path.partition("/")
    if top in ("lib", "lib64", "bin", "sbin"):
        return f"usr/{top}/{rest}" if rest else f"usr/{top}"
    return path


def _is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


LOADER = Path("/lib64/ld-linux-x86-64.so.2")


def ldd(binary: Path) -> list[tuple[str, str]]:
    """(name, host path) of each shared object `binary` loads; the loader's name is its path.

    What `ldd` prints. `ldd` is a bash script that asks the loader (`--verify`, then a trace):
    asking the loader directly is the same answer without a bash per file, which matters for
    PostgreSQL's ~90 ELF files (0.1 s instead of 0.7 s). Other machines use `ldd` itself."""
    if LOADER.exists():
        verify = subprocess.run(
            [str(LOADER), "--verify", str(binary)], capture_output=True, check=False
        )
        if verify.returncode not in (0, 2):
            return []  # not a dynamic executable
        argv = [str(LOADER), "--list", str(binary)]
    else:
        argv = ["ldd", str(binary)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = done.stdout + done.stderr
    if done.returncode != 0:
        if "not a dynamic executable" in text or "statically linked" in text:
            return []
        raise BuildError(f"ldd {binary} failed: {text.strip()}")
    found = []
    for raw in done.stdout.splitlines():
        line = raw.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            where = rest.strip().rsplit(" (", 1)[0].strip()
            if not where or where == "not found":
                raise BuildError(f"{binary} needs {name.strip()}, which is not found")
            found.append((name.strip(), where))
        elif line.startswith("/"):
            where = line.rsplit(" (", 1)[0].strip()
            found.append((where, where))
    return found


@dataclass
class Rootfs:
    entries: dict[str, Entry] = field(default_factory=dict)
    elves: list[Path] = field(default_factory=list)  # files whose libraries must come along

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self._parents(path)
        self.entries[path] = Entry(path, "dir", mode, uid, gid)

    def file(self, path: str, source: Path, mode: int | None = None, *, elf: bool = False) -> None:
        self._parents(path)
        real = source.resolve()
        if mode is None:
            mode = stat.S_IMODE(real.stat().st_mode)
        self.entries[path] = Entry(path, "file", mode, source=real)
        if elf:
            self.elves.append(real)

    def data(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        self._parents(path)
        raw = content.encode() if isinstance(content, str) else content
        self.entries[path] = Entry(path, "file", mode, data=raw)

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        self.entries[path] = Entry(path, "symlink", 0o777, target=target)

    def tree(self, dest: str, source: Path, keep: Callable[[Path], bool]) -> None:
        """Copy `source` into `dest`, files `keep` accepts (by relative path), ELF files with
        their libraries; symlinks that stay inside the tree stay symlinks."""
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if not keep(relative) or path.is_dir():
                continue
            into = f"{dest}/{relative.as_posix()}"
            if path.is_symlink():
                target = os.readlink(path)
                inside = (path.parent / target).resolve().is_relative_to(source.resolve())
                if not os.path.isabs(target) and inside:
                    self.symlink(into, target)
                    continue
            self.file(into, path, elf=_is_elf(path))

    def base(self, *, user: str | None, home: str | None = None) -> None:
        """Merged-/usr skeleton, /tmp, and an /etc/passwd and /etc/group with the service user."""
        for top in ("bin", "lib", "lib64", "sbin"):
            self.dir(f"usr/{top}")
            self.symlink(top, f"usr/{top}")
        self.dir("usr/local/bin")
        self.dir("tmp", 0o1777)
        self.dir("run")
        self.symlink("var/run", "../run")
        self.dir("var/tmp", 0o1777)
        passwd = "root:x:0:0:root:/root:/bin/sh\n"
        group = "root:x:0:\n"
        if user is not None:
            passwd += f"{user}:x:{SERVICE_UID}:{SERVICE_UID}::{home or '/home/' + user}:/bin/sh\n"
            group += f"{user}:x:{SERVICE_UID}:\n"
        self.data("etc/passwd", passwd)
        self.data("etc/group", group)
        self.data("etc/nsswitch.conf", NSSWITCH)
        self.dir("root", 0o700)

    def shell(self) -> None:
        """/bin/sh: Debian's dash."""
        self.file("usr/bin/dash", DASH, elf=True)
        self.symlink("usr/bin/sh", "dash")

    def tool(self, name: str) -> None:
        """A tool an entrypoint script runs, from this machine's /usr/bin, with its libraries."""
        found = shutil.which(name, path="/usr/bin:/bin")
        if found is None:
            raise BuildError(f"{name} is not installed on this machine")
        self.file(f"usr/bin/{name}", Path(found), elf=True)

    def add_libraries(self) -> None:
        """The shared objects every ELF file loads (`ldd`), except those the image already has."""
        shipped = {e.source for e in self.entries.values() if e.source is not None}
        with ThreadPoolExecutor(max_workers=8) as pool:
            needs = list(pool.map(ldd, dict.fromkeys(self.elves)))
        loaded = {(name, where) for need in needs for name, where in need}
        libc = next((w for n, w in loaded if n == "libc.so.6"), "/lib/x86_64-linux-gnu/libc.so.6")
        libdir = _image_path(os.path.dirname(libc))
        for name, where in sorted(loaded):
            real = Path(where).resolve()
            if real in shipped:
                continue  # shipped with its program, at the relative place its RPATH expects
            system = os.path.normpath(where).startswith(("/lib/", "/lib64/", "/usr/lib"))
            # Elsewhere (an unpacked package, say): into the loader's default folder.
            into = _image_path(where) if name.startswith("/") or system else f"{libdir}/{name}"
            if into not in self.entries:
                self.file(into, real)

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.entries:
                self.entries[parent] = Entry(parent, "dir", 0o755)

    def digest(self) -> str:
        """What the image would hold: every file's path, mode and owner; every file's content
        (copied or generated; not its mtime); and this builder's code. An upgraded binary or
        library, or a new builder, is another digest.

        Content, not where a file is or when it was installed: two checkouts (two venvs with
        the same wheels) sharing one engine make the same digest, so each keeps the image the
        other built instead of rebuilding it under the other's running containers."""
        # The builder's own code too: a change in how images are made rebuilds them.
        h = hashlib.sha256()
        for module in sorted(Path(__file__).parent.glob("*.py")):
            h.update(module.read_bytes())
        sources = sorted({e.source for e in self.entries.values() if e.source is not None})
        # Hashing reads ~200 MB for OpenBao's image; hashlib releases the GIL on big chunks.
        with ThreadPoolExecutor(max_workers=4) as pool:
            contents = dict(zip(sources, pool.map(_content_digest, sources), strict=True))
        for path in sorted(self.entries):
            e = self.entries[path]
            h.update(f"\0{path}\0{e.kind}\0{e.mode:o}\0{e.uid}\0{e.gid}\0".encode())
            if e.source is not None:
                h.update(contents[e.source])
            elif e.data is not None:
                h.update(hashlib.sha256(e.data).digest())
            elif e.target is not None:
                h.update(e.target.encode())
        return h.hexdigest()

    def write(self, stream: IO[bytes]) -> None:
        """The root filesystem as an uncompressed tar stream, parents before children."""
        with tarfile.open(
            fileobj=stream,
            mode="w|",
            format=tarfile.GNU_FORMAT,
            bufsize=1 << 20,  # the stream's writes to docker import
        ) as tar:
            # Reads from the files copied in: 1 MiB instead of 16 KiB makes the stream ~3x
            # faster (bao is 174 MB). An attribute typeshed does not list.
            cast(Any, tar).copybufsize = 1 << 20
            for path in sorted(self.entries):
                e = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mode, info.uid, info.gid = e.mode, e.uid, e.gid
                info.mtime = int(e.source.stat().st_mtime) if e.source else 0
                if e.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif e.kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = e.target or ""
                    tar.addfile(info)
                elif e.source is not None:
                    with e.source.open("rb") as handle:
                        info.size = os.fstat(handle.fileno()).st_size
                        tar.addfile(info, handle)
                else:
                    raw = e.data or b""
                    info.size = len(raw)
                    tar.addfile(info, _BytesReader(raw))


def _content_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            h.update(chunk)
    return h.digest()


class _BytesReader:
    def __init__(self, raw: bytes) -> None:
        self._raw, self._at = raw, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._raw) if size < 0 else self._at + size
        chunk, self._at = self._raw[self._at : end], min(end, len(self._raw))
        return chunk
