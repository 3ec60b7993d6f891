"""Building the local images: each root filesystem piped to `docker import` as a tar stream,
an image whose `testfleet.content-hash` label matches what would be built now kept as it is,
one builder at a time on this machine (`builder_lock`)."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from testfleet.files import TRAVERSABLE_DIR, machine_dir, secure_dir
from testfleet.images.recipes import HASH_LABEL, IMAGE_TAGS, OPTIONAL, RECIPES, Image
from testfleet.images.rootfs import BuildError


@dataclass(frozen=True)
class Result:
    kind: str
    tag: str
    status: Literal["built", "up to date", "skipped", "failed"]
    seconds: float
    size: int | None = None  # bytes, for an image that is present
    note: str = ""


def _environ() -> dict[str, str]:
    """The docker client pointed at the engine runs use (testcontainers' choice: its
    properties file, DOCKER_HOST, the docker context), so that runs find what is built."""
    environ = dict(os.environ)
    host = _engine(os.environ.get("DOCKER_HOST"))
    if host:
        environ["DOCKER_HOST"] = host
    return environ


@functools.cache
def _engine(docker_host_variable: str | None) -> str | None:
    """testcontainers' engine, asked once for each DOCKER_HOST it may read."""
    try:
        from testfleet.backends.docker_engine import docker_host

        return docker_host()
    except Exception:  # no docker extra: the client's own choice then
        return None


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker") is None:
        raise BuildError("no docker client; install one (apt-get install docker.io)")
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=_environ(),
    )


def check_engine() -> None:
    """A BuildError naming the engine when none answers: one line, not one per image."""
    try:
        done = _docker("version", "--format", "{{.Server.Version}}", timeout=30)
        answered = done.returncode == 0 and bool(done.stdout.strip())
    except subprocess.TimeoutExpired:
        answered = False
    if not answered:
        host = _environ().get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise BuildError(
            f"no Docker engine answers at {host}; start dockerd (or Docker Desktop) and run"
            " this again"
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
        subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=out, stderr=out, env=_environ()
        ) as proc,
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


_held = threading.local()  # how deep this thread is in builder_lock()


@contextmanager
def builder_lock() -> Iterator[None]:
    """One builder at a time for this user on this machine: pytest-xdist workers, two
    checkouts' test sessions, two `testfleet images build` may all ask at once, and each would
    see an image missing or stale and import it again under the other (the tag is the
    engine's, one for all). A thread that holds it already (a caller holding it across builds,
    to see what a build did before another builder's) goes on without taking it again.

    In testfleet's machine directory, not $TMPDIR: sessions with different TMPDIRs (CI jobs)
    must find the same lock."""
    depth = getattr(_held, "depth", 0)
    if depth:
        _held.depth = depth + 1
        try:
            yield
        finally:
            _held.depth = depth
        return
    folder = secure_dir(machine_dir(), TRAVERSABLE_DIR, what="testfleet's machine directory")
    fd = os.open(folder / "images.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
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

    with builder_lock(), ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
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
