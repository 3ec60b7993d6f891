"""Making (or reusing) the venv of one Python version with uv: the project installed the way
its pyproject (and uv.lock, when there is one) says, plus pytest (and coverage with
`--coverage`) when the project does not bring them.

testfleet itself is never installed there: installing it once replaced a project's own checkout
of psycopg with testfleet's `psycopg[binary]`. The lane plugin reaches lanes through PYTHONPATH
instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from testfleet.errors import ConfigError
from testfleet.files import write_private
from testfleet.project import Project
from testfleet.venvs.failures import uv_failure
from testfleet.venvs.fingerprint import FINGERPRINT_NAME, fingerprint, is_up_to_date
from testfleet.venvs.uv import Cancelled, UvRunner

# "envs" on disk, not "venvs": users already have theirs there, and the docs name it.
VENVS_DIR = Path(".testfleet") / "envs"


class Built(NamedTuple):
    venv_dir: Path
    reused: bool  # an existing venv was up to date


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _installed(venv_dir: Path, distribution: str) -> bool:
    """Whether `distribution` is installed in the venv, read from its site-packages."""
    paths = [str(p) for p in venv_dir.glob("lib/python*/site-packages")]
    return any(True for _ in importlib.metadata.distributions(name=distribution, path=paths))


class Builder:
    """Makes (or reuses) the venv of one version at a time; several may run at once."""

    def __init__(
        self, project: Project, uv: UvRunner, uv_version: str, say: Callable[[str], None]
    ) -> None:
        self.root: Path = project.root
        self.config = project.config
        self.uv = uv
        self.uv_version = uv_version
        self._say_lock = threading.Lock()
        self._said: set[str] = set()
        self._raw_say = say

    def say(self, message: str, *, once: str | None = None) -> None:
        # One lock around the caller's `say`: lines from parallel builds never interleave.
        with self._say_lock:
            if once is not None:
                if once in self._said:
                    return
                self._said.add(once)
            self._raw_say(message)

    def shown(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def prepare(self, label: str, interpreter: Path, version: str) -> Built:
        venv_dir = self.root / VENVS_DIR / label
        try:
            return self._prepare(label, venv_dir, interpreter, version)
        except OSError as exc:
            where = exc.filename or venv_dir
            raise ConfigError(
                f"python {label}: cannot make {where} ({exc.strerror or exc});"
                f" make {self.root / VENVS_DIR} writable for this user"
            ) from exc

    def _prepare(self, label: str, venv_dir: Path, interpreter: Path, version: str) -> Built:
        wanted = fingerprint(
            self.root,
            interpreter=interpreter,
            version=version,
            extras=self.config.extras,
            groups=self.config.dependency_groups,
            uv_version=self.uv_version,
        )
        with self._locked(venv_dir, label):
            if is_up_to_date(venv_dir, wanted):
                self._add_tools(label, venv_dir)
                self.say(
                    f"python {label}: environment {self.shown(venv_dir)} is up to date (reused)"
                )
                return Built(venv_dir, reused=True)
            self.say(
                f"python {label}: making environment {self.shown(venv_dir)} with uv"
                f" (CPython {version} from {interpreter})"
            )
            started = time.monotonic()
            self._build(label, venv_dir, interpreter)
            self._add_tools(label, venv_dir)
            # Written last: an interrupted or failed build never looks up to date.
            write_private(venv_dir / FINGERPRINT_NAME, wanted + "\n")
            self.say(
                f"python {label}: environment {self.shown(venv_dir)} made in"
                f" {time.monotonic() - started:.1f} s"
            )
            return Built(venv_dir, reused=False)

    @contextlib.contextmanager
    def _locked(self, venv_dir: Path, label: str) -> Iterator[None]:
        """One builder per venv across processes: two runs in one project share it."""
        venv_dir.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(venv_dir.parent / f".{label}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self.say(
                        f"python {label}: waiting for another testfleet making"
                        f" {self.shown(venv_dir)}",
                        once=f"wait {label}",
                    )
                    # Polled, so an interrupt of this run is not stuck behind the other run.
                    if self.uv.cancelled.wait(0.2):
                        raise Cancelled from None
            yield
        finally:
            os.close(fd)  # releases the lock

    def _build(self, label: str, venv_dir: Path, interpreter: Path) -> None:
        if venv_dir.is_symlink() or venv_dir.is_file():
            venv_dir.unlink()
        elif venv_dir.exists():
            shutil.rmtree(venv_dir)
        self._uv(
            label,
            "venv",
            [
                "venv",
                "--no-project",
                "--no-python-downloads",
                "--python",
                str(interpreter),
                str(venv_dir),
            ],
        )
        python = str(venv_python(venv_dir))
        extras, groups = self.config.extras, self.config.dependency_groups
        if (self.root / "uv.lock").is_file():
            args = ["sync", "--project", str(self.root), "--frozen", "--python", python]
            if groups:
                # Exactly the groups asked for; without any, uv's defaults (the `dev` group),
                # as `uv run pytest` would have.
                args.append("--no-default-groups")
            args += [flag for name in extras for flag in ("--extra", name)]
            args += [flag for name in groups for flag in ("--group", name)]
            self._uv(label, "sync", args, env={"UV_PROJECT_ENVIRONMENT": str(venv_dir)})
        else:
            target = f"{self.root}[{','.join(extras)}]" if extras else str(self.root)
            args = ["pip", "install", "--python", python, "-e", target]
            pyproject = self.root / "pyproject.toml"
            args += [flag for name in groups for flag in ("--group", f"{pyproject}:{name}")]
            self._uv(label, "pip install", args)

    def _add_tools(self, label: str, venv_dir: Path) -> None:
        """pytest (and coverage for --coverage) when the project did not bring them, pinned
        against what is installed so that nothing of the project's changes."""
        tools = ["pytest"] + (["coverage"] if self.config.coverage else [])
        missing = [tool for tool in tools if not _installed(venv_dir, tool)]
        if not missing:
            return
        if "pytest" in missing:
            self.say(
                "pytest is not among what the project installs (its dependencies, extras and"
                " dependency-groups): adding it to each environment; add it to a dependency"
                " group to choose its version",
                once="pytest",
            )
        if "coverage" in missing:
            self.say(
                "coverage is not among what the project installs: adding it to each"
                " environment for --coverage",
                once="coverage",
            )
        python = str(venv_python(venv_dir))
        frozen = self._uv(label, "pip freeze", ["pip", "freeze", "--python", python])
        pins = [line for line in frozen.splitlines() if re.match(r"^[A-Za-z0-9._-]+==", line)]
        with tempfile.NamedTemporaryFile(
            "w", prefix=".constraints-", suffix=".txt", dir=venv_dir, delete=False
        ) as out:
            out.write("\n".join(pins) + "\n")
        try:
            self._uv(
                label,
                "pip install",
                ["pip", "install", "--python", python, "--constraint", out.name, *missing],
                fix=f"could not add {' and '.join(missing)}; if uv says they clash with the"
                " project's packages, add them to a dependency group (dependency-groups) in"
                " versions that fit",
            )
        finally:
            os.unlink(out.name)

    def _uv(
        self,
        label: str,
        step: str,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        fix: str | None = None,
    ) -> str:
        out = self.uv.run(args, cwd=self.root, env=env)
        if out.returncode == 0:
            return out.text
        raise uv_failure(label, step, out, self.uv.environ, fix=fix, timeout=self.uv.timeout)
