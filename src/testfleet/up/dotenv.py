"""The env file an up writes for shells and tools (`set -a; . .testfleet/env; set +a`), and the
lock that makes one up per env file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path

from testfleet.console import say
from testfleet.envvars import LANE_COUNT
from testfleet.errors import ConfigError
from testfleet.files import write_private
from testfleet.options import OPTIONS


def for_shells(env: Mapping[str, str]) -> dict[str, str]:
    """The developer's lane's env as `up` prints and writes it: without any variable that is
    an option's env var (TESTFLEET_TIMEOUT, ... set by the `env` or an `export` table), which
    would set that option for every later testfleet in the shell that sources the file."""
    options = {option.env: option for option in OPTIONS}
    kept = {}
    for key, value in env.items():
        option = options.get(key)
        if option is None:
            kept[key] = value
        else:
            say(
                f"{key} left out of the env file: it is the env var of the {option.key} option"
                " of every testfleet run in a shell that sources the file; export it under"
                " another name"
            )
    kept[LANE_COUNT] = "1"  # the developer's lane is one lane, however many the up keeps warm
    return kept


def write_dotenv(path: Path, env: Mapping[str, str]) -> None:
    """Owner-only: it holds the run's passwords."""
    write_private(path, "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items()))


def read_dotenv(path: Path) -> dict[str, str]:
    """What write_dotenv wrote (for tools that run pytest with an up's env themselves)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        values[key] = shlex.split(value)[0] if value else ""
    return values


@contextlib.contextmanager
def dotenv_lock(dotenv: Path) -> Iterator[None]:
    """One `testfleet up` per env file: a second one would overwrite the first's env, and
    stopping either would delete the file the other still serves."""
    dotenv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = dotenv.with_name(f".{dotenv.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(
                f"another `testfleet up` (pid {holder}) serves {dotenv}; stop it first, or give"
                " this one its own env file with --dotenv PATH"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        if dotenv.exists():
            dotenv.unlink()
            say(f"removed {dotenv}, left by a `testfleet up` that was killed")
        yield
    finally:
        os.close(fd)
