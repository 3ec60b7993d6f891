"""Finding the CPython interpreters already on this machine that virtual environments are
made from: pyenv's versions, the system's, PATH's, and the ones uv installed itself.

uv's own downloads fail on the machines this runs on, and uv cannot see through pyenv's shims,
so the search is testfleet's; every candidate is run to check what it is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from testfleet.errors import ConfigError
from testfleet.values import is_version
from testfleet.venvs import uv

PROBE_TIMEOUT = 15.0
# Searched after pyenv; a module constant so tests can point it at a fake tree.
SYSTEM_BIN_DIRS: tuple[Path, ...] = (Path("/usr/bin"), Path("/usr/local/bin"))

_PROBE = "import sys; print(sys.implementation.name, *sys.version_info[:3])"


def _wanted(spec: str) -> tuple[int, ...]:
    if not is_version(spec):
        raise ValueError(f"not a Python version: {spec!r}")
    return tuple(int(part) for part in spec.split("."))


def probe(python: Path | str, *, cpython: bool = True) -> tuple[int, int, int] | None:
    """The version `python` reports when run, or None when it does not run (or, with
    `cpython`, is another implementation).

    Running it is the only test that counts: a pyenv shim exists and is executable, and fails
    ("pyenv: python3.12: command not found") unless that version is selected.
    """
    try:
        out = subprocess.run(
            [str(python), "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.stdout.split()
    if out.returncode != 0 or len(words) != 4 or (cpython and words[0] != "cpython"):
        return None
    try:
        return int(words[1]), int(words[2]), int(words[3])
    except ValueError:
        return None


def _is_shim_dir(entry: str) -> bool:
    # pyenv, pyenv-virtualenv, asdf and mise put shims in a `shims` directory.
    return Path(entry).name == "shims"


def _version_key(name: str) -> tuple[int, ...]:
    numbers = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", name)
    if numbers is None:
        return (-1,)
    return tuple(int(n) for n in numbers.groups(default="0"))


def _search_dirs(environ: Mapping[str, str]) -> Iterator[Path]:
    """Where interpreters named `pythonX.Y` are looked for, in order."""
    pyenv_root = Path(environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    try:
        versions = [p for p in (pyenv_root / "versions").iterdir() if p.is_dir()]
    except OSError:
        versions = []
    # The newest patch release of a version first, then anything pyenv holds by another name.
    for version_dir in sorted(versions, key=lambda p: (_version_key(p.name), p.name), reverse=True):
        yield version_dir / "bin"
    yield from SYSTEM_BIN_DIRS
    for entry in environ.get("PATH", "").split(os.pathsep):
        if entry and not _is_shim_dir(entry):
            yield Path(entry)


def _unique(paths: Iterable[Path]) -> Iterator[Path]:
    seen: set[Path] = set()
    for path in paths:
        try:
            real = path.resolve()
        except OSError:
            continue
        if real in seen or not os.access(path, os.X_OK) or path.is_dir():
            continue
        seen.add(real)
        yield path


def _uv_managed(spec: str, uv_binary: Path | None) -> Path | None:
    """A Python uv installed itself earlier, if any; uv is asked not to download one."""
    if uv_binary is None:
        return None
    try:
        out = subprocess.run(
            [str(uv_binary), "python", "find", "--managed-python", "--no-python-downloads", spec],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
            # Not from the project: a `.venv` there or an activated venv is not an interpreter
            # the user asked for.
            cwd=tempfile.gettempdir(),
            env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = out.stdout.strip()
    return Path(found) if out.returncode == 0 and found else None


def running_interpreter() -> Path:
    """The running CPython outside any venv it runs in: a venv must not depend on testfleet's
    own venv, whose place changes with how testfleet was installed."""
    if sys.prefix != sys.base_prefix:
        x_y = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        for candidate in (getattr(sys, "_base_executable", ""), f"{sys.base_prefix}/bin/{x_y}"):
            if candidate and candidate != sys.executable and os.access(candidate, os.X_OK):
                return Path(candidate)
    return Path(sys.executable)


def locate(spec: str, *, uv_binary: Path | None = None) -> tuple[Path, str]:
    """The interpreter for `spec` and the full version it reported."""
    wanted = _wanted(spec)
    name = f"python{wanted[0]}.{wanted[1]}"

    def matches(version: tuple[int, ...] | None) -> bool:
        return version is not None and version[: len(wanted)] == wanted

    running = tuple(sys.version_info[:3])
    if sys.implementation.name == "cpython" and matches(running):
        return running_interpreter(), ".".join(map(str, running))
    candidates = _unique(directory / name for directory in _search_dirs(os.environ))
    for candidate in candidates:
        version = probe(candidate)
        if matches(version):
            assert version is not None
            return candidate, ".".join(map(str, version))
    managed = _uv_managed(spec, uv_binary)
    if managed is not None:
        version = probe(managed)
        if matches(version):
            assert version is not None
            return managed, ".".join(map(str, version))
    found = ", ".join(installed_pythons()) or "none"
    x_y = f"{wanted[0]}.{wanted[1]}"
    raise ConfigError(
        f"python {spec}: no CPython {spec} found on this machine (found: {found});"
        f" install it (apt-get install python{x_y}, or pyenv install {spec}) or drop it from python"
    )


def find_interpreter(spec: str) -> Path:
    """An existing CPython for `spec` ("3.12", or "3.12.1" exactly) on this machine.

    Searched in order: the running interpreter; pyenv's versions (`$PYENV_ROOT`, else
    ~/.pyenv), newest patch first; /usr/bin and /usr/local/bin; every PATH entry except shim
    directories; Pythons uv installed itself. Each candidate is run to check what it is.
    """
    # Looked up on the module (not imported by name) so tests replace it in one place.
    return locate(spec, uv_binary=uv.find_uv_or_none())[0]


def installed_pythons() -> dict[str, Path]:
    """Every CPython 3.x found where `find_interpreter` looks: full version -> first path."""
    found: dict[tuple[int, int, int], Path] = {}
    running = sys.version_info[:3]
    if sys.implementation.name == "cpython":
        found[(running[0], running[1], running[2])] = running_interpreter()
    names = (
        path
        for directory in _search_dirs(os.environ)
        for path in sorted(directory.glob("python3.*"))
        if re.fullmatch(r"python3\.\d+", path.name)
    )
    for path in _unique(names):
        version = probe(path)
        if version is not None:
            found.setdefault(version, path)
    return {".".join(map(str, v)): found[v] for v in sorted(found)}
