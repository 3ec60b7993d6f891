"""One environment per Python version of the matrix, made with uv.

`python = ["3.11", "3.12"]` asks for a virtual environment per version under
`.testfleet/envs/<version>/`, built from an interpreter already on this machine (uv's own
downloads fail on the machines this runs on, and uv cannot see through pyenv's shims), with the
project installed the way its pyproject (and uv.lock, when there is one) says, plus pytest (and
coverage with `--coverage`) when the project does not bring them. testfleet itself is never
installed there: installing it once replaced a project's own checkout of psycopg with
testfleet's `psycopg[binary]`. The lane plugin reaches lanes through PYTHONPATH instead.

An environment is rebuilt only when what it was built from changes (see `fingerprint`).
Credentials for private indexes reach uv and nothing else (`child_environ`), and are masked in
whatever of uv's output is shown (`mask_credentials`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testfleet.config import Project
from testfleet.credentials import mask_credentials
from testfleet.errors import ConfigError, ServiceError, did_you_mean
from testfleet.files import write_private
from testfleet.values import is_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENVS_DIR = Path(".testfleet") / "envs"
FINGERPRINT_NAME = ".testfleet-fingerprint"
# Bump when the way an environment is built changes, so old ones are rebuilt once.
FINGERPRINT_FORMAT = "testfleet-env 1"
UV_TIMEOUT = 900.0
PROBE_TIMEOUT = 15.0
MAX_PARALLEL_BUILDS = 4
DETAIL_LINES = 20
# Searched after pyenv; a module constant so tests can point it at a fake tree.
SYSTEM_BIN_DIRS: tuple[Path, ...] = (Path("/usr/bin"), Path("/usr/local/bin"))

_PROBE = "import sys; print(sys.implementation.name, *sys.version_info[:3])"


@dataclass(frozen=True)
class PythonTarget:
    """One Python the suite runs on."""

    label: str  # what the user asked for: "3.12", or the interpreter as configured
    python: str  # the interpreter that runs pytest (an env's bin/python, or the given one)
    version: str  # the full version it reports, "3.12.1"
    env_dir: Path | None
    reused: bool  # an existing environment was up to date


# -- interpreters ------------------------------------------------------------------------------


def _wanted(spec: str) -> tuple[int, ...]:
    if not is_version(spec):
        raise ValueError(f"not a Python version: {spec!r}")
    return tuple(int(part) for part in spec.split("."))


def _probe(python: Path | str, *, cpython: bool = True) -> tuple[int, int, int] | None:
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


def _uv_managed(spec: str, uv: Path | None) -> Path | None:
    """A Python uv installed itself earlier, if any; uv is asked not to download one."""
    if uv is None:
        return None
    try:
        out = subprocess.run(
            [str(uv), "python", "find", "--managed-python", "--no-python-downloads", spec],
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
    """The running CPython outside any venv it runs in: an environment must not depend on
    testfleet's own venv, whose place changes with how testfleet was installed."""
    if sys.prefix != sys.base_prefix:
        x_y = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        for candidate in (getattr(sys, "_base_executable", ""), f"{sys.base_prefix}/bin/{x_y}"):
            if candidate and candidate != sys.executable and os.access(candidate, os.X_OK):
                return Path(candidate)
    return Path(sys.executable)


def _find(spec: str, *, uv: Path | None = None) -> tuple[Path, str]:
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
        version = _probe(candidate)
        if matches(version):
            assert version is not None
            return candidate, ".".join(map(str, version))
    managed = _uv_managed(spec, uv)
    if managed is not None:
        version = _probe(managed)
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
    return _find(spec, uv=_find_uv_or_none())[0]


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
        version = _probe(path)
        if version is not None:
            found.setdefault(version, path)
    return {".".join(map(str, v)): found[v] for v in sorted(found)}


# -- uv ----------------------------------------------------------------------------------------


def find_uv() -> Path:
    """The uv binary: the one from the `uv` package next to testfleet, else the one on PATH."""
    found = _find_uv_or_none()
    if found is None:
        raise ConfigError(
            "python lists versions, which need uv to make their environments, and uv is not"
            " installed; pip install uv (next to testfleet), or set python to one interpreter"
        )
    return found


def _find_uv_or_none() -> Path | None:
    try:
        # The `uv` package from PyPI ships the binary; looked up by name so that testfleet
        # type-checks and runs without it (a uv on PATH serves as well).
        find_uv_bin = importlib.import_module("uv").find_uv_bin
        return Path(find_uv_bin())
    except (ImportError, AttributeError, FileNotFoundError):
        pass
    on_path = shutil.which("uv")
    return Path(on_path) if on_path else None


class _Cancelled(Exception):
    """The run was interrupted while this build waited or ran: stop quietly."""


@dataclass(frozen=True)
class _Output:
    returncode: int
    text: str
    timed_out: bool = False


class _Uv:
    """Runs uv with the caller's environment (credentials included: they are for uv), bounded
    in time, and able to stop every uv it started when the run is interrupted."""

    def __init__(self, binary: Path, environ: Mapping[str, str], timeout: float) -> None:
        self.binary = binary
        self.environ = environ
        self.timeout = timeout
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[str]] = set()

    def run(
        self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
    ) -> _Output:
        # An activated venv is not where uv should install (and uv warns about it).
        environ = {k: v for k, v in self.environ.items() if k != "VIRTUAL_ENV"}
        environ.update({"UV_NO_PROGRESS": "1", **(env or {})})
        with self._lock:
            if self.cancelled.is_set():
                raise _Cancelled
            try:
                proc = self._start(args, cwd, environ)
            except OSError as exc:
                raise ServiceError(
                    f"uv at {self.binary} could not be started ({exc.strerror or exc});"
                    " reinstall uv (pip install uv)"
                ) from exc
            self._live.add(proc)
        try:
            text, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            text, _ = proc.communicate()
            return _Output(proc.returncode, text or "", timed_out=True)
        except BaseException:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            with self._lock:
                self._live.discard(proc)
        if self.cancelled.is_set():
            raise _Cancelled
        return _Output(proc.returncode, text or "")

    def _start(
        self, args: Sequence[str], cwd: Path, environ: Mapping[str, str]
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.binary), *args],
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            # Its own process group: Ctrl-C goes to us, and we stop uv with its children.
            start_new_session=True,
        )

    def stop_all(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop every uv running now and refuse to start more."""
        with self._lock:
            self.cancelled.set()
            for proc in self._live:
                if proc.poll() is None:  # once reaped, its pid may belong to someone else
                    _kill_group(proc, sig)


def _kill_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def uv_version(uv: _Uv) -> str:
    out = uv.run(["--version"], cwd=Path(tempfile.gettempdir()))
    if out.returncode != 0:
        raise ServiceError(f"uv at {uv.binary} does not run (uv --version exited {out.returncode})")
    return out.text.strip()


# -- what the project asks for -----------------------------------------------------------------

_FINGERPRINT_FILES = ("pyproject.toml", "uv.lock", "setup.py", "setup.cfg")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_pyproject(root: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}  # the config loader already refused a broken one; uv will say the rest


def check_names(root: Path, extras: Sequence[str], groups: Sequence[str]) -> None:
    """Refuse extras and dependency groups the project does not define, before uv runs (uv
    only warns about an unknown extra, and would build an environment without it)."""
    document = _read_pyproject(root)
    project = document.get("project")
    if (
        extras
        and isinstance(project, dict)
        and "optional-dependencies" not in project.get("dynamic", [])
    ):
        defined = project.get("optional-dependencies") or {}
        _check_defined("extras", "extra", extras, defined, "[project.optional-dependencies]")
    if groups:
        defined_groups = dict(document.get("dependency-groups") or {})
        uv_table = document.get("tool", {}).get("uv", {})
        if isinstance(uv_table, dict) and uv_table.get("dev-dependencies") is not None:
            defined_groups.setdefault("dev", [])  # uv's older spelling of the `dev` group
        _check_defined(
            "dependency-groups", "dependency group", groups, defined_groups, "[dependency-groups]"
        )


def _check_defined(
    key: str, what: str, names: Sequence[str], defined: Mapping[str, Any], table: str
) -> None:
    known = {_normalize(name): name for name in defined}
    for name in names:
        if _normalize(name) not in known:
            listed = ", ".join(sorted(defined)) or "none"
            raise ConfigError(
                f"{key}: the project defines no {what} {name!r}"
                f"{did_you_mean(name, defined)} (its {key}: {listed});"
                f" fix the name in {key}, or add it to {table} in pyproject.toml"
            )


def fingerprint(
    root: Path,
    *,
    interpreter: Path,
    version: str,
    extras: Sequence[str],
    groups: Sequence[str],
    uv_version: str,
) -> str:
    """sha256 over everything an environment is built from; a change means a rebuild.

    The project's source is not in it: the project is installed editable.
    """
    digest = hashlib.sha256()

    def add(label: str, value: str | bytes) -> None:
        data = value.encode() if isinstance(value, str) else value
        digest.update(f"{label} {len(data)}\n".encode())
        digest.update(data)

    add("format", FINGERPRINT_FORMAT)
    add("interpreter", str(interpreter))
    add("version", version)
    add("uv", uv_version)
    add("extras", ",".join(sorted(_normalize(e) for e in extras)))
    add("groups", ",".join(sorted(_normalize(g) for g in groups)))
    names = [*_FINGERPRINT_FILES, *sorted(p.name for p in root.glob("requirements*.txt"))]
    for name in names:
        path = root / name
        try:
            add(f"file {name}", path.read_bytes())
        except FileNotFoundError:
            add(f"absent {name}", "")
        except IsADirectoryError:
            add(f"directory {name}", "")
    return digest.hexdigest()


def is_up_to_date(env_dir: Path, wanted: str) -> bool:
    """The environment was fully built from the same inputs (its fingerprint is written last)."""
    try:
        recorded = (env_dir / FINGERPRINT_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return recorded == wanted and (env_dir / "bin" / "python").exists()


def env_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def _installed(env_dir: Path, distribution: str) -> bool:
    """Whether `distribution` is installed in the environment, read from its site-packages."""
    paths = [str(p) for p in env_dir.glob("lib/python*/site-packages")]
    return any(True for _ in importlib.metadata.distributions(name=distribution, path=paths))


# -- building ----------------------------------------------------------------------------------


class _Builder:
    """Makes (or reuses) the environment of one version at a time; several may run at once."""

    def __init__(
        self, project: Project, uv: _Uv, uv_version: str, say: Callable[[str], None]
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

    def prepare(self, label: str, interpreter: Path, version: str) -> PythonTarget:
        env_dir = self.root / ENVS_DIR / label
        try:
            return self._prepare(label, env_dir, interpreter, version)
        except OSError as exc:
            where = exc.filename or env_dir
            raise ConfigError(
                f"python {label}: cannot make {where} ({exc.strerror or exc});"
                f" make {self.root / ENVS_DIR} writable for this user"
            ) from exc

    def _prepare(self, label: str, env_dir: Path, interpreter: Path, version: str) -> PythonTarget:
        wanted = fingerprint(
            self.root,
            interpreter=interpreter,
            version=version,
            extras=self.config.extras,
            groups=self.config.dependency_groups,
            uv_version=self.uv_version,
        )
        with self._locked(env_dir, label):
            if is_up_to_date(env_dir, wanted):
                self._add_tools(label, env_dir)
                self.say(
                    f"python {label}: environment {self.shown(env_dir)} is up to date (reused)"
                )
                return PythonTarget(label, str(env_python(env_dir)), version, env_dir, True)
            self.say(
                f"python {label}: making environment {self.shown(env_dir)} with uv"
                f" (CPython {version} from {interpreter})"
            )
            started = time.monotonic()
            self._build(label, env_dir, interpreter)
            self._add_tools(label, env_dir)
            # Written last: an interrupted or failed build never looks up to date.
            write_private(env_dir / FINGERPRINT_NAME, wanted + "\n")
            self.say(
                f"python {label}: environment {self.shown(env_dir)} made in"
                f" {time.monotonic() - started:.1f} s"
            )
            return PythonTarget(label, str(env_python(env_dir)), version, env_dir, False)

    @contextlib.contextmanager
    def _locked(self, env_dir: Path, label: str) -> Iterator[None]:
        """One builder per environment across processes: two runs in one project share it."""
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(env_dir.parent / f".{label}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self.say(
                        f"python {label}: waiting for another testfleet making"
                        f" {self.shown(env_dir)}",
                        once=f"wait {label}",
                    )
                    # Polled, so an interrupt of this run is not stuck behind the other run.
                    if self.uv.cancelled.wait(0.2):
                        raise _Cancelled from None
            yield
        finally:
            os.close(fd)  # releases the lock

    def _build(self, label: str, env_dir: Path, interpreter: Path) -> None:
        if env_dir.is_symlink() or env_dir.is_file():
            env_dir.unlink()
        elif env_dir.exists():
            shutil.rmtree(env_dir)
        self._uv(
            label,
            "venv",
            [
                "venv",
                "--no-project",
                "--no-python-downloads",
                "--python",
                str(interpreter),
                str(env_dir),
            ],
        )
        python = str(env_python(env_dir))
        extras, groups = self.config.extras, self.config.dependency_groups
        if (self.root / "uv.lock").is_file():
            args = ["sync", "--project", str(self.root), "--frozen", "--python", python]
            if groups:
                # Exactly the groups asked for; without any, uv's defaults (the `dev` group),
                # as `uv run pytest` would have.
                args.append("--no-default-groups")
            args += [flag for name in extras for flag in ("--extra", name)]
            args += [flag for name in groups for flag in ("--group", name)]
            self._uv(label, "sync", args, env={"UV_PROJECT_ENVIRONMENT": str(env_dir)})
        else:
            target = f"{self.root}[{','.join(extras)}]" if extras else str(self.root)
            args = ["pip", "install", "--python", python, "-e", target]
            pyproject = self.root / "pyproject.toml"
            args += [flag for name in groups for flag in ("--group", f"{pyproject}:{name}")]
            self._uv(label, "pip install", args)

    def _add_tools(self, label: str, env_dir: Path) -> None:
        """pytest (and coverage for --coverage) when the project did not bring them, pinned
        against what is installed so that nothing of the project's changes."""
        tools = ["pytest"] + (["coverage"] if self.config.coverage else [])
        missing = [tool for tool in tools if not _installed(env_dir, tool)]
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
        python = str(env_python(env_dir))
        frozen = self._uv(label, "pip freeze", ["pip", "freeze", "--python", python])
        pins = [line for line in frozen.splitlines() if re.match(r"^[A-Za-z0-9._-]+==", line)]
        with tempfile.NamedTemporaryFile(
            "w", prefix=".constraints-", suffix=".txt", dir=env_dir, delete=False
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
        raise _failure(label, step, out, self.uv.environ, fix=fix, timeout=self.uv.timeout)


# uv's wording for mistakes in what the user asked for, and what to change.
_USER_MISTAKES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"(extra `[^`]+` is not defined|does not have an extra named)", re.I),
        "fix the name in extras, or add it to [project.optional-dependencies]",
    ),
    (
        re.compile(r"group (`[^`]+`|'[^']+') (is not defined|was not found)", re.I),
        "fix the name in dependency-groups, or add it to [dependency-groups]",
    ),
    (
        re.compile(
            r"(not compatible with the locked Python requirement|"
            r"current Python version .* does not satisfy Python)",
            re.I,
        ),
        "drop this version from python, or widen the project's requires-python",
    ),
)


def _failure(
    label: str,
    step: str,
    out: _Output,
    environ: Mapping[str, str],
    *,
    fix: str | None,
    timeout: float,
) -> ConfigError | ServiceError:
    text = mask_credentials(out.text, environ)
    lines = [line for line in text.splitlines() if line.strip()]
    details = "\n".join(lines[-DETAIL_LINES:])
    if out.timed_out:
        return ServiceError(
            f"python {label}: uv {step} did not finish in {timeout:g} s and was stopped;"
            " check that the package index is reachable",
            details=details,
        )
    for pattern, mistake_fix in _USER_MISTAKES:
        for line in lines:
            if pattern.search(line):
                said = line.strip().removeprefix("error: ").removeprefix("cause: ")
                return ConfigError(f"python {label}: uv: {said}; {mistake_fix}", details=details)
    fix = fix or "its output is below (an unreachable index, or a package that fails to build?)"
    return ServiceError(
        f"python {label}: uv {step} failed (exit {out.returncode}); {fix}",
        details=details,
    )


# -- the matrix --------------------------------------------------------------------------------


def _single(project: Project) -> PythonTarget:
    """One interpreter as configured (or the running one): used as it is, no environment."""
    configured = project.config.python
    python: str = project.python
    if python == sys.executable:
        version = ".".join(map(str, sys.version_info[:3]))
    else:
        probed = _probe(python, cpython=False)
        if probed is None:
            raise ConfigError(
                f"python {configured[0] if configured else python}: {python} does not run as a"
                " Python interpreter; point python at one with pytest installed, or leave it"
                " unset"
            )
        version = ".".join(map(str, probed))
    label = configured[0] if configured else ".".join(version.split(".")[:2])
    return PythonTarget(label, python, version, None, False)


def prepare_targets(project: Project, *, say: Callable[[str], None]) -> list[PythonTarget]:
    """The Pythons the suite runs on, in the configured order, environments made or reused.

    A single interpreter (or none configured: the running one) is used as it is. For versions,
    every interpreter is found and every name checked before anything is built; then the
    environments are built in parallel, each to the end, and the first failure (in configured
    order) is raised.
    """
    configured: tuple[str, ...] | None = project.config.python
    if configured is None or not is_version(configured[0]):
        return [_single(project)]
    check_names(project.root, project.config.extras, project.config.dependency_groups)
    binary = find_uv()
    found = [(label, *_find(label, uv=binary)) for label in configured]
    uv = _Uv(binary, dict(os.environ), UV_TIMEOUT)
    builder = _Builder(project, uv, uv_version(uv), say)
    pool = ThreadPoolExecutor(
        max_workers=min(len(found), MAX_PARALLEL_BUILDS), thread_name_prefix="testfleet-env"
    )
    futures: list[Future[PythonTarget]] = []
    try:
        futures = [pool.submit(builder.prepare, *item) for item in found]
        wait(futures, return_when=FIRST_EXCEPTION)
        # Others still building finish: their environments are cached for the next run.
        wait(futures)
    except BaseException:
        # Ctrl-C, SIGTERM (Interrupted): no uv may outlive the run.
        _stop_builds(uv, futures)
        raise
    finally:
        pool.shutdown(wait=True)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
    return [future.result() for future in futures]


def _stop_builds(uv: _Uv, futures: Sequence[Future[PythonTarget]]) -> None:
    uv.stop_all(signal.SIGTERM)
    try:
        # uv exits promptly on SIGTERM; whatever does not is killed.
        wait(futures, timeout=5)
    finally:
        uv.stop_all(signal.SIGKILL)
