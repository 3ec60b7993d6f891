"""A GitHub Actions runner in miniature: runs a workflow's jobs, step by step, on this machine.

Standard library only, so it also runs inside a container that looks like a CI runner pod
(`python github_runner.py SPEC.json`). What it does, as GitHub does it:

- jobs in the order their `needs` allow, each skipped unless its `if:` holds (default
  `success()`: every job it needs succeeded); a job's matrix expanded (its values may be
  expressions of inputs and needs' outputs), every combination on a fresh "machine": its own
  home, runner temp, `git clone` of the repository (what actions/checkout gives), env and PATH;
- `run:` steps with `bash --noprofile --norc -eo pipefail` (the generator sets bash),
  `defaults.run.working-directory` of the job or workflow, `${{ }}` substituted in every value,
  GITHUB_ENV / GITHUB_PATH / GITHUB_OUTPUT / GITHUB_STEP_SUMMARY honoured between steps, step
  `if:` conditions with success() / failure() / cancelled() / always();
- a job `uses: ./.github/workflows/X.yml` runs the called workflow with its inputs' defaults
  and the caller's `with:`;
- re-runs: `rerun_failed()` runs the failed jobs (and the jobs that need them) again, as
  "Re-run failed jobs" does, with `github.run_attempt` + 1 and the artifacts of the run kept.

Expressions are parsed by a small evaluator of GitHub's grammar (literals, contexts, `!`,
`==`, `!=`, `&&`, `||`, parentheses and the functions the generator writes); anything else
raises, so a new expression is taught here rather than passed through untested. Actions are
emulated by a table: checkout, setup-python (the interpreter of that version first on PATH),
setup-uv (uv on PATH, its tool dirs and cache dir from its inputs), cache / cache/restore /
cache/save (a local cache store with GitHub's key and restore-keys matching),
upload-artifact / download-artifact (a local artifact store; `overwrite`, `pattern`,
`merge-multiple`, hidden files left out unless `include-hidden-files`).
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEP_TIMEOUT = 900

# --- expressions ----------------------------------------------------------------------------

TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<string>'(?:[^']|'')*')"
    r"|(?P<op>==|!=|&&|\|\||[!()\[\],.])|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)
EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


class ExpressionError(Exception):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ExpressionError(f"cannot read {text!r} at {text[position:]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _text(value: Any) -> str:
    """How GitHub turns a value into text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", 0.0)


def _loose_equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return bool(a == b)


class Evaluator:
    """GitHub's expression grammar, over `contexts` and `functions`."""

    def __init__(self, contexts: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]):
        self.contexts = contexts
        self.functions = functions

    def evaluate(self, text: str) -> Any:
        self.tokens = _tokens(text)
        self.position = 0
        value = self._or()
        if self.position != len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.position]} in {text!r}")
        return value

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value!r}, got {token!r}")
        self.position += 1
        return token

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == ("op", "||"):
            self._take()
            right = self._and()
            left = left if _truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._equality()
        while self._peek() == ("op", "&&"):
            self._take()
            right = self._equality()
            left = right if _truthy(left) else left
        return left

    def _equality(self) -> Any:
        left = self._unary()
        while self._peek() in (("op", "=="), ("op", "!=")):
            operator = self._take()[1]
            right = self._unary()
            same = _loose_equal(left, right)
            left = same if operator == "==" else not same
        return left

    def _unary(self) -> Any:
        if self._peek() == ("op", "!"):
            self._take()
            return not _truthy(self._unary())
        return self._postfix()

    def _postfix(self) -> Any:
        value = self._primary()
        while True:
            token = self._peek()
            if token == ("op", "."):
                self._take()
                name = self._take()[1]
                value = value.get(name) if isinstance(value, dict) else None
            elif token == ("op", "["):
                self._take()
                index = self._or()
                self._take("]")
                if isinstance(value, list) and isinstance(index, int | float):
                    value = value[int(index)] if int(index) < len(value) else None
                elif isinstance(value, dict):
                    value = value.get(_text(index))
                else:
                    value = None
            else:
                return value

    def _primary(self) -> Any:
        kind, text = self._take()
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if (kind, text) == ("op", "("):
            value = self._or()
            self._take(")")
            return value
        if kind != "name":
            raise ExpressionError(f"unexpected {text!r}")
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        if self._peek() == ("op", "("):
            self._take()
            args = []
            while self._peek() != ("op", ")"):
                args.append(self._or())
                if self._peek() == ("op", ","):
                    self._take()
            self._take(")")
            if text not in self.functions:
                raise ExpressionError(f"the runner does not know the function {text}()")
            return self.functions[text](*args)
        if text not in self.contexts:
            raise ExpressionError(f"the runner does not know the context {text!r}")
        return self.contexts[text]


def _format(template: str, *args: Any) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: _text(args[int(m.group(1))]), template)


# --- the stores a run shares --------------------------------------------------------------


@dataclass
class Stores:
    """What outlives a job: artifacts (per run) and caches (per repository)."""

    root: Path

    def __post_init__(self) -> None:
        for name in ("artifacts", "caches"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def caches(self) -> Path:
        return self.root / "caches"

    def cache_dir(self, key: str) -> Path:
        return self.caches / hashlib.sha256(key.encode()).hexdigest()[:24]

    def cache_save(self, key: str, paths: list[Path], base: Path) -> bool:
        """GitHub's caches are immutable: a key that exists is not written again."""
        folder = self.cache_dir(key)
        if folder.exists():
            return False
        staging = folder.with_suffix(".new")
        for path in paths:
            if not path.exists() or path.is_symlink():
                continue
            target = staging / "files" / _cache_name(path, base)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target)
            else:
                shutil.copy2(path, target)
        if not staging.exists():
            return False
        (staging / "key").write_text(key)
        (staging / "created").write_text(f"{time.time_ns()}")
        staging.rename(folder)
        return True

    def cache_restore(
        self, key: str, restore_keys: list[str], paths: list[Path], base: Path
    ) -> str | None:
        """The exact key, else the newest cache whose key starts with a restore key (tried in
        order); its files copied over `paths`. Returns the key restored."""
        entries = []
        for folder in self.caches.iterdir():
            if (folder / "key").is_file():
                entries.append(
                    ((folder / "key").read_text(), int((folder / "created").read_text()), folder)
                )
        chosen = next((e for e in entries if e[0] == key), None)
        if chosen is None:
            for prefix in restore_keys:
                matches = sorted(
                    (e for e in entries if e[0].startswith(prefix)), key=lambda e: -e[1]
                )
                if matches:
                    chosen = matches[0]
                    break
        if chosen is None:
            return None
        for path in paths:
            source = chosen[2] / "files" / _cache_name(path, base)
            if not source.exists() or path.is_symlink():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, path, dirs_exist_ok=True)
            else:
                shutil.copy2(source, path)
        return chosen[0]


def _cache_name(path: Path, base: Path) -> str:
    try:
        return "ws/" + path.relative_to(base).as_posix()
    except ValueError:
        return "abs/" + path.as_posix().lstrip("/")


# --- one job on one machine -------------------------------------------------------------


@dataclass
class Step:
    name: str
    ran: bool
    code: int = 0
    output: str = ""


@dataclass
class Machine:
    """A runner's environment for one job."""

    home: Path
    origin: Path
    base_env: Mapping[str, str]
    pythons: Mapping[str, str]  # version -> its bin directory
    uv: str
    uv_cache: str | None = None  # a warm uv cache every machine shares (see below)

    def __post_init__(self) -> None:
        self.workspace = self.home / "workspace"
        self.workspace.mkdir(parents=True)  # GitHub's workspace exists, empty, before checkout
        self.temp = self.home / "runner-temp"
        self.temp.mkdir(parents=True)
        (self.home / "home" / ".cache").mkdir(parents=True)
        if self.uv_cache:
            # What actions/cache would restore, without copying a large cache per job: the
            # cache steps leave a linked path alone.
            (self.home / "home" / ".cache" / "uv").symlink_to(self.uv_cache)


@dataclass
class JobRun:
    """One job (one matrix combination) running on its machine."""

    workflow: Workflow
    job_id: str
    spec: dict[str, Any]
    matrix: dict[str, Any]
    machine: Machine
    contexts: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    failed: bool = False
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    summary: str = ""
    posts: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        temp = self.machine.temp
        for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY"):
            (temp / name).touch()
        self.env = {
            **self.machine.base_env,
            "HOME": str(self.machine.home / "home"),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "RUNNER_OS": "Linux",
            "RUNNER_TEMP": str(temp),
            "GITHUB_WORKSPACE": str(self.machine.workspace),
            "GITHUB_RUN_ID": str(self.workflow.run.run_id),
            "GITHUB_RUN_ATTEMPT": str(self.workflow.run.attempt),
            **{n: str(temp / n) for n in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH")},
            "GITHUB_STEP_SUMMARY": str(temp / "GITHUB_STEP_SUMMARY"),
        }
        self.contexts = {
            **self.contexts,
            "matrix": self.matrix,
            "runner": {"os": "Linux", "temp": str(temp)},
            "steps": self.outputs_context(),
        }
        # The workflow's env, then the job's, for every step.
        for declared in (self.workflow.spec.get("env", {}), self.spec.get("env", {})):
            self.env.update({k: _text(v) for k, v in self.substitute(declared).items()})

    def outputs_context(self) -> dict[str, Any]:
        return {step_id: {"outputs": values} for step_id, values in self.outputs.items()}

    def evaluator(self) -> Evaluator:
        contexts = {**self.contexts, "steps": self.outputs_context(), "env": self.env}

        def hash_files(*patterns: str) -> str:
            digest = hashlib.sha256()
            found = False
            for pattern in patterns:
                for name in sorted(
                    glob.glob(str(self.machine.workspace / pattern), recursive=True)
                ):
                    if os.path.isfile(name):
                        found = True
                        digest.update(Path(name).read_bytes())
            return digest.hexdigest() if found else ""

        functions: dict[str, Callable[..., Any]] = {
            "always": lambda: True,
            "success": lambda: not self.failed,
            "failure": lambda: self.failed,
            "cancelled": lambda: False,
            "hashFiles": hash_files,
            "fromJSON": json.loads,
            "toJSON": json.dumps,
            "format": _format,
            "startsWith": lambda a, b: _text(a).lower().startswith(_text(b).lower()),
            "contains": lambda a, b: _text(b).lower() in _text(a).lower(),
        }
        return Evaluator(contexts, functions)

    def substitute(self, value: Any) -> Any:
        if isinstance(value, str):
            whole = EXPRESSION.fullmatch(value.strip())
            if whole:
                return self.evaluator().evaluate(whole.group(1))
            return EXPRESSION.sub(lambda m: _text(self.evaluator().evaluate(m.group(1))), value)
        if isinstance(value, dict):
            return {key: self.substitute(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.substitute(item) for item in value]
        return value

    def condition(self, text: Any) -> bool:
        if text is None:
            return not self.failed
        if isinstance(text, bool):
            return text
        match = EXPRESSION.fullmatch(str(text).strip())
        expression = match.group(1) if match else str(text)
        return _truthy(self.evaluator().evaluate(expression))

    # -- running --------------------------------------------------------------------------

    def run(self) -> None:
        for step in self.spec.get("steps", []):
            self.run_step(step)
        for post in reversed(self.posts):
            post()

    def working_directory(self, step: dict[str, Any]) -> Path:
        chosen = step.get("working-directory")
        if chosen is None:
            for defaults in (self.spec.get("defaults"), self.workflow.spec.get("defaults")):
                if defaults and "working-directory" in defaults.get("run", {}):
                    chosen = defaults["run"]["working-directory"]
                    break
        if chosen is None:
            return self.machine.workspace
        return self.machine.workspace / _text(self.substitute(chosen))

    def environ(self, extra: Mapping[str, str]) -> dict[str, str]:
        path = [*self.path, "/usr/local/bin", "/usr/bin", "/bin"]
        return {**self.env, **extra, "PATH": os.pathsep.join(path)}

    def run_step(self, step: dict[str, Any]) -> None:
        name = step.get("name") or str(step.get("uses") or step["run"].splitlines()[0])
        if not self.condition(step.get("if")):
            self.steps.append(Step(name, ran=False))
            return
        env = {k: _text(v) for k, v in self.substitute(step.get("env", {})).items()}
        if "run" in step:
            code, output = self.script(
                self.substitute(step["run"]), env, self.working_directory(step)
            )
        else:
            code, output = self.use(str(step["uses"]), self.substitute(step.get("with", {})))
        if "id" in step:
            self.outputs[step["id"]] = self.read_outputs()
        else:
            self.read_outputs()
        self.steps.append(Step(name, ran=True, code=code, output=output))
        if code != 0:
            self.failed = True

    def script(self, script: str, env: Mapping[str, str], cwd: Path) -> tuple[int, str]:
        assert self.workflow.shell(self.spec) == "bash"
        index = len(self.steps)
        script_file = self.machine.temp / f"step-{index}.sh"
        script_file.write_text(script)
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)],
            cwd=cwd,
            env=self.environ(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        self.apply_files()
        return done.returncode, done.stdout

    def apply_files(self) -> None:
        """What a step wrote to GITHUB_ENV, GITHUB_PATH and the step summary."""
        temp = self.machine.temp
        for line in (temp / "GITHUB_ENV").read_text().splitlines():
            assert "<<" not in line, "multi-line GITHUB_ENV values are not emulated"
            key, _, value = line.partition("=")
            self.env[key] = value
        for line in reversed((temp / "GITHUB_PATH").read_text().splitlines()):
            self.path.insert(0, line)
        self.summary += (temp / "GITHUB_STEP_SUMMARY").read_text()
        for name in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY"):
            (temp / name).write_text("")

    def read_outputs(self) -> dict[str, str]:
        path = self.machine.temp / "GITHUB_OUTPUT"
        values = {}
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            values[key] = value
        path.write_text("")
        return values

    # -- the actions ----------------------------------------------------------------------

    def use(self, uses: str, given: dict[str, Any]) -> tuple[int, str]:
        action = uses.split("@", 1)[0]
        handler = {
            "actions/checkout": self.checkout,
            "actions/setup-python": self.setup_python,
            "astral-sh/setup-uv": self.setup_uv,
            "actions/cache": self.cache,
            "actions/cache/restore": self.cache_restore,
            "actions/cache/save": self.cache_save,
            "actions/upload-artifact": self.upload,
            "actions/download-artifact": self.download,
        }.get(action)
        if handler is None:
            raise AssertionError(f"the runner does not know the action {uses}")
        return handler(given)

    def checkout(self, given: dict[str, Any]) -> tuple[int, str]:
        assert given.get("persist-credentials") is False, "checkout keeps the token in .git"
        if not any(self.machine.workspace.iterdir()):
            done = subprocess.run(
                ["git", "clone", "-q", str(self.machine.origin), str(self.machine.workspace)],
                capture_output=True,
                text=True,
                check=False,
            )
            return done.returncode, done.stderr
        return 0, "already checked out"

    def setup_python(self, given: dict[str, Any]) -> tuple[int, str]:
        version = _text(given["python-version"])
        if version not in self.machine.pythons:
            return 1, f"no Python {version} on this runner"
        self.path.insert(0, self.machine.pythons[version])
        return 0, f"python {version}"

    def setup_uv(self, given: dict[str, Any]) -> tuple[int, str]:
        uv_bin = self.machine.home / "uv-bin"
        uv_bin.mkdir(exist_ok=True)
        if not (uv_bin / "uv").exists():
            (uv_bin / "uv").symlink_to(self.machine.uv)
        self.path.insert(0, str(uv_bin))
        if given.get("tool-dir"):
            self.env["UV_TOOL_DIR"] = os.path.expanduser(given["tool-dir"])
        if given.get("tool-bin-dir"):
            self.env["UV_TOOL_BIN_DIR"] = given["tool-bin-dir"]
            self.path.insert(0, given["tool-bin-dir"])
        else:
            self.path.insert(0, str(self.machine.home / "home" / ".local" / "bin"))
        if given.get("cache-local-path"):
            self.env["UV_CACHE_DIR"] = self.expand(given["cache-local-path"])
        return 0, "uv on PATH"

    def expand(self, path: str) -> str:
        return path.replace("~", self.env["HOME"], 1) if path.startswith("~") else path

    def paths(self, text: str) -> list[Path]:
        return [
            self.machine.workspace / self.expand(line.strip())
            for line in _text(text).splitlines()
            if line.strip()
        ]

    def cache(self, given: dict[str, Any]) -> tuple[int, str]:
        code, said = self.cache_restore(given)
        hit = said.startswith("restored " + _text(given["key"]) + " ")

        def save() -> None:
            if not hit and not self.failed:
                self.workflow.run.stores.cache_save(
                    _text(given["key"]), self.paths(given["path"]), self.machine.workspace
                )

        self.posts.append(save)
        return code, said

    def cache_restore(self, given: dict[str, Any]) -> tuple[int, str]:
        keys = [k.strip() for k in _text(given.get("restore-keys", "")).splitlines() if k.strip()]
        restored = self.workflow.run.stores.cache_restore(
            _text(given["key"]), keys, self.paths(given["path"]), self.machine.workspace
        )
        return 0, f"restored {restored} " if restored else "cache miss"

    def cache_save(self, given: dict[str, Any]) -> tuple[int, str]:
        saved = self.workflow.run.stores.cache_save(
            _text(given["key"]), self.paths(given["path"]), self.machine.workspace
        )
        return 0, "saved" if saved else "not saved"

    def upload(self, given: dict[str, Any]) -> tuple[int, str]:
        paths = self.paths(given["path"])
        hidden = given.get("include-hidden-files") is True
        files = []
        for path in paths:
            found = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            files += [p for p in found if p.is_file()]
        if not hidden:  # upload-artifact leaves out every path with a part starting with "."
            files = [
                f
                for f in files
                if not any(
                    part.startswith(".") for part in f.relative_to(self.machine.workspace).parts
                )
            ]
        if not files:
            return (1 if given.get("if-no-files-found") == "error" else 0), "no files found"
        roots = [p if p.is_dir() else p.parent for p in paths if p.exists()]
        root = Path(os.path.commonpath(roots))
        target = self.workflow.run.stores.artifacts / _text(given["name"])
        if target.exists():
            if given.get("overwrite") is not True:
                return 1, f"an artifact named {given['name']} exists (409 Conflict)"
            shutil.rmtree(target)
        for file in files:
            destination = target / file.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, destination)
        (target.parent / f"{target.name}.attempt").write_text(str(self.workflow.run.attempt))
        return 0, f"uploaded {len(files)} file(s) as {given['name']}"

    def download(self, given: dict[str, Any]) -> tuple[int, str]:
        into = self.machine.workspace / _text(given.get("path") or ".")
        store = self.workflow.run.stores.artifacts
        names = sorted(p.name for p in store.iterdir() if p.is_dir())
        if given.get("name"):
            if given["name"] not in names:
                return 1, f"no artifact named {given['name']}"
            chosen, base_by_name = [given["name"]], False
        else:
            chosen = [n for n in names if fnmatch.fnmatchcase(n, given.get("pattern", "*"))]
            base_by_name = not given.get("merge-multiple")
        owner: dict[Path, str] = {}
        for name in chosen:
            source = store / name
            base = into / name if base_by_name else into
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                relative = file.relative_to(source)
                # Merged artifacts that share a path keep only one of them.
                assert relative not in owner, f"{relative} is in {owner.get(relative)} and {name}"
                owner[relative] = name
                destination = base / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, destination)
        return 0, f"downloaded {', '.join(chosen)}"


# --- a workflow run ---------------------------------------------------------------------


@dataclass
class Run:
    """A workflow run: its id, attempt, event, and the stores its jobs share."""

    run_id: int
    stores: Stores
    event: dict[str, Any]
    attempt: int = 1


@dataclass
class JobResult:
    job_id: str
    result: str  # success | failure | skipped
    runs: list[JobRun]
    outputs: dict[str, str]
    reran: list[JobRun] = field(default_factory=list)  # the runs of the last attempt


@dataclass
class Workflow:
    spec: dict[str, Any]
    run: Run
    origin: Path
    workspace_root: Path
    machine_env: Mapping[str, str]
    pythons: Mapping[str, str]
    uv: str
    uv_cache: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    results: dict[str, JobResult] = field(default_factory=dict)
    loader: Callable[[str], dict[str, Any]] | None = None  # reads a local called workflow
    prefix: str = ""

    def shell(self, job: dict[str, Any]) -> str:
        for defaults in (job.get("defaults"), self.spec.get("defaults")):
            if defaults and "shell" in defaults.get("run", {}):
                return str(defaults["run"]["shell"])
        return "bash"

    def github_context(self) -> dict[str, Any]:
        return {
            "workflow": self.spec.get("name", "workflow"),
            "run_id": self.run.run_id,
            "run_attempt": self.run.attempt,
            **self.run.event,
        }

    def base_contexts(self) -> dict[str, Any]:
        needs = {
            name: {"result": result.result, "outputs": result.outputs}
            for name, result in self.results.items()
        }
        return {
            "github": self.github_context(),
            "inputs": self.inputs,
            "secrets": self.secrets,
            "needs": needs,
            "vars": {},
        }

    def order(self) -> list[str]:
        jobs = self.spec["jobs"]
        done: list[str] = []
        while len(done) < len(jobs):
            ready = [
                name
                for name, job in jobs.items()
                if name not in done and all(n in done for n in _needs(job))
            ]
            assert ready, "the jobs' needs run in a circle"
            done += ready
        return done

    def run_all(self, only: set[str] | None = None) -> dict[str, JobResult]:
        """Every job (or those in `only`, the others' results kept) in needs order."""
        for name in self.order():
            if only is not None and name not in only:
                continue
            self.results[name] = self.run_job(name)
        return self.results

    def run_job(self, name: str, keep: list[JobRun] | None = None) -> JobResult:
        """The job's runs; `keep`: runs of a matrix leg that succeeded before (a re-run of
        failed jobs runs only the failed legs again)."""
        job = self.spec["jobs"][name]
        needs = _needs(job)
        contexts = self.base_contexts()
        contexts["needs"] = {k: v for k, v in contexts["needs"].items() if k in needs}
        needed_failed = any(self.results[n].result != "success" for n in needs)
        probe = _Probe(contexts, failed=needed_failed)
        if not probe.condition(job.get("if")):
            return JobResult(name, "skipped", [], {})
        if "uses" in job:
            return self.call(name, job, probe)
        strategy = job.get("strategy", {}).get("matrix", {})
        axes = {key: probe.substitute(values) for key, values in strategy.items()}
        combinations = [
            dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())
        ] or [{}]
        runs = []
        kept = {json.dumps(r.matrix, sort_keys=True): r for r in keep or ()}
        for number, matrix in enumerate(combinations):
            previous = kept.get(json.dumps(matrix, sort_keys=True))
            if previous is not None:
                runs.append(previous)
                continue
            home = self.workspace_root / f"{self.prefix}{name}-{number}-a{self.run.attempt}"
            machine = Machine(
                home, self.origin, self.machine_env, self.pythons, self.uv, self.uv_cache
            )
            job_run = JobRun(self, name, job, matrix, machine, contexts)
            job_run.run()
            runs.append(job_run)
        result = "failure" if any(r.failed for r in runs) else "success"
        outputs: dict[str, str] = {}
        for job_run in runs:
            for key, value in job.get("outputs", {}).items():
                outputs[key] = _text(job_run.substitute(value))
        reran = [r for r in runs if r not in (keep or ())]
        return JobResult(name, result, runs, outputs, reran)

    def call(self, name: str, job: dict[str, Any], probe: _Probe) -> JobResult:
        assert self.loader is not None, "no loader for called workflows"
        called = self.loader(str(job["uses"]))
        declared = called["on"]["workflow_call"].get("inputs", {})
        given = probe.substitute(job.get("with", {}))
        unknown = set(given) - set(declared)
        assert not unknown, f"{name} passes inputs the called workflow lacks: {unknown}"
        inputs = {key: spec.get("default") for key, spec in declared.items()}
        inputs.update(given)
        secrets = probe.substitute(job.get("secrets", {}))
        assert secrets != "inherit", "secrets: inherit hands every secret to the called workflow"
        inner = Workflow(
            called,
            self.run,
            self.origin,
            self.workspace_root,
            self.machine_env,
            self.pythons,
            self.uv,
            self.uv_cache,
            inputs=inputs,
            secrets=dict(secrets or {}),
            loader=self.loader,
            prefix=f"{self.prefix}{name}.",
        )
        inner.run_all()
        self.inner = inner
        failed = any(r.result == "failure" for r in inner.results.values())
        return JobResult(name, "failure" if failed else "success", [], {})

    def rerun_failed(self, *, next_attempt: bool = True) -> dict[str, JobResult]:
        """GitHub's "Re-run failed jobs": failed jobs and the jobs that need them, again."""
        if next_attempt:
            self.run.attempt += 1
        inner: Workflow | None = getattr(self, "inner", None)
        if inner is not None:
            return inner.rerun_failed(next_attempt=False)
        again = {name for name, result in self.results.items() if result.result == "failure"}
        changed = True
        while changed:
            changed = False
            for name, job in self.spec["jobs"].items():
                if name not in again and set(_needs(job)) & again:
                    again.add(name)
                    changed = True
        for name in self.order():
            if name not in again:
                continue
            before = self.results.get(name)
            failed_legs = before is not None and before.result == "failure"
            keep = [r for r in before.runs if not r.failed] if failed_legs and before else []
            self.results[name] = self.run_job(name, keep)
        return self.results

    def all_runs(self) -> Iterator[JobRun]:
        inner = getattr(self, "inner", None)
        if inner is not None:
            yield from inner.all_runs()
        for result in self.results.values():
            yield from result.runs


class _Probe(JobRun):
    """Conditions and values of a job before any machine exists for it."""

    def __init__(self, contexts: dict[str, Any], failed: bool) -> None:
        self.contexts = contexts
        self.failed = failed
        self.outputs = {}
        self.env = {}


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def describe(job_run: JobRun, tail: int = 30) -> str:
    lines = [f"job {job_run.job_id} {job_run.matrix}:"]
    for step in job_run.steps:
        status = f"exit {step.code}" if step.ran else "skipped"
        lines.append(f"  - {step.name}: {status}")
        if step.ran and step.code:
            lines += [f"      {line}" for line in step.output.splitlines()[-tail:]]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run a workflow described by a JSON file (what the tests hand a container):
    {"workflow": {...}, "called": {"./path": {...}}, "origin": ..., "work": ..., "env": {...},
    "pythons": {...}, "uv": ..., "event": {...}, "run_id": N, "inputs": {...}}; prints one
    JSON line per job run and exits 0."""
    spec = json.loads(Path(argv[0]).read_text())
    work = Path(spec["work"])
    run = Run(spec["run_id"], Stores(work / "stores"), spec["event"])
    called = spec.get("called", {})
    workflow = Workflow(
        spec["workflow"],
        run,
        Path(spec["origin"]),
        work,
        spec["env"],
        spec["pythons"],
        spec["uv"],
        spec.get("uv_cache"),
        inputs=spec.get("inputs", {}),
        loader=lambda uses: called[uses],
    )
    workflow.run_all()
    report = []
    for job_run in workflow.all_runs():
        report.append(
            {
                "job": job_run.job_id,
                "matrix": job_run.matrix,
                "failed": job_run.failed,
                "steps": [[s.name, s.ran, s.code] for s in job_run.steps],
                "described": describe(job_run),
                "summary": job_run.summary,
                "workspace": str(job_run.machine.workspace),
                "outputs": {s.name: s.output[-4000:] for s in job_run.steps if s.ran},
            }
        )
    Path(spec["report"]).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
