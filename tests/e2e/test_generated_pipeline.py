"""The generated `.gitlab-ci.yml`, run as generated, without GitLab.

The pipeline's jobs run stage by stage (`.pre`, then the file's `stages`), the `parallel:
matrix` expanded, each job on a fresh "machine": a clone of the repository, the image's Python
(`python:X.Y` is a venv of that version with pip, as the image has), the job's variables and
GitLab's predefined ones, `before_script` and `script` in one bash with errexit, `when:
always`, the artifacts of every job of earlier stages downloaded first, `cache` pulled before
(the key, then its `fallback_keys`) and pushed after (per its `policy` and `when`), and the
`coverage:` regex applied to the job's log. testfleet is the release built from this checkout
(see test_generated_workflow.py), installed by the file's pinned spec.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testfleet import __version__
from tests.e2e.ci_lab import (
    FILES,
    PYPROJECT,
    RUNNING,
    TESTS,
    Lab,
    commit,
    git,
    line_rate,
    load,
    make_origin,
    outcomes,
)

pytestmark = pytest.mark.e2e

JOB_TIMEOUT = 900
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass
class Job:
    name: str
    stage: str
    spec: dict[str, Any]
    variables: dict[str, str]
    code: int = 0
    log: str = ""
    coverage: str | None = None
    workspace: Path = field(default_factory=Path)


def expand(text: str, variables: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: variables.get(m.group(1), ""), text)


@dataclass
class Pipeline:
    document: dict[str, Any]
    lab: Lab
    images: dict[str, Path]  # python version -> a venv standing for the python:X.Y image
    branch: str = "main"
    jobs: list[Job] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.artifacts = self.lab.work / "gitlab-artifacts"
        self.caches = self.lab.work / "gitlab-caches"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.caches.mkdir(parents=True, exist_ok=True)

    def predefined(self) -> dict[str, str]:
        return {
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_COMMIT_REF_SLUG": self.branch,
            "CI_COMMIT_BRANCH": self.branch,
            "CI_DEFAULT_BRANCH": "main",
        }

    def expanded_jobs(self) -> list[Job]:
        jobs = []
        for name, spec in self.document.items():
            if not isinstance(spec, dict) or "script" not in spec:
                continue
            stage = spec.get("stage", "test")
            matrix = spec.get("parallel", {}).get("matrix")
            combos: list[dict[str, str]] = [{}]
            if matrix:
                combos = []
                for entry in matrix:
                    axes = {k: v if isinstance(v, list) else [v] for k, v in entry.items()}
                    for values in itertools.product(*axes.values()):
                        combos.append(dict(zip(axes, map(str, values), strict=True)))
            for combo in combos:
                label = f"{name}: [{', '.join(combo.values())}]" if combo else name
                jobs.append(Job(label, stage, spec, combo))
        return jobs

    def run(self) -> list[Job]:
        stages = [".pre", *self.document.get("stages", ["test"]), ".post"]
        failed = False
        for stage in stages:
            for job in [j for j in self.expanded_jobs() if j.stage == stage]:
                when = job.spec.get("when", "on_success")
                if failed and when != "always":
                    continue
                self.run_job(job, stages.index(stage))
                self.jobs.append(job)
            failed = failed or any(j.code for j in self.jobs if j.stage == stage)
        return self.jobs

    def run_job(self, job: Job, stage_index: int) -> None:
        home = self.lab.work / "gitlab" / re.sub(r"[^A-Za-z0-9.-]+", "-", job.name)
        home.mkdir(parents=True)
        job.workspace = home / "build"
        git("clone", "-q", str(self.lab.origin), str(job.workspace), cwd=home)
        variables = {**self.predefined(), "CI_PROJECT_DIR": str(job.workspace), **job.variables}
        for key, value in job.spec.get("variables", {}).items():
            variables[key] = expand(str(value), variables)
        image = expand(job.spec["image"], variables)
        version = image.removeprefix("python:")
        # Artifacts of every job of the earlier stages.
        for earlier in self.jobs:
            stored = self.artifacts / re.sub(r"[^A-Za-z0-9.-]+", "-", earlier.name)
            if stored.is_dir():
                shutil.copytree(stored, job.workspace, dirs_exist_ok=True)
        caches = job.spec.get("cache", [])
        caches = caches if isinstance(caches, list) else [caches]
        for cache in caches:
            if cache.get("policy", "pull-push") in ("pull", "pull-push"):
                self.pull(cache, variables, job.workspace)
        script = [*job.spec.get("before_script", []), *job.spec["script"]]
        home_dir = home / "root"
        home_dir.mkdir()
        environ = {
            **self.lab.env,
            **variables,
            "HOME": str(home_dir),
            "PATH": f"{self.images[version] / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        }
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", "\n".join(script)],
            cwd=job.workspace,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=JOB_TIMEOUT,
            check=False,
        )
        job.code, job.log = done.returncode, done.stdout
        if "coverage" in job.spec:
            pattern = re.compile(job.spec["coverage"].strip("/"), re.MULTILINE)
            found = pattern.findall(job.log)
            job.coverage = found[-1] if found else None
        for cache in caches:
            policy, when = cache.get("policy", "pull-push"), cache.get("when", "on_success")
            if policy in ("push", "pull-push") and (job.code == 0 or when == "always"):
                self.push(cache, variables, job.workspace)
        artifacts = job.spec.get("artifacts", {})
        if artifacts and (job.code == 0 or artifacts.get("when") == "always"):
            self.keep(job, artifacts.get("paths", []), variables)

    def keep(self, job: Job, paths: list[str], variables: dict[str, str]) -> None:
        stored = self.artifacts / re.sub(r"[^A-Za-z0-9.-]+", "-", job.name)
        for pattern in paths:
            for found in job.workspace.glob(expand(pattern, variables).rstrip("/")):
                target = stored / found.relative_to(job.workspace)
                if found.is_dir():
                    shutil.copytree(found, target, dirs_exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(found, target)

    def cache_key(self, cache: dict[str, Any], variables: dict[str, str]) -> str:
        key = cache["key"]
        if isinstance(key, dict):  # key: files: -> a hash of those files; enough to differ
            return expand(str(key.get("prefix", "")), variables) + "-files"
        return expand(str(key), variables)

    def pull(self, cache: dict[str, Any], variables: dict[str, str], workspace: Path) -> None:
        keys = [self.cache_key(cache, variables)]
        keys += [expand(k, variables) for k in cache.get("fallback_keys", [])]
        for key in keys:
            stored = self.caches / re.sub(r"[^A-Za-z0-9.-]+", "-", key)
            if stored.is_dir():
                shutil.copytree(stored, workspace, dirs_exist_ok=True)
                return

    def push(self, cache: dict[str, Any], variables: dict[str, str], workspace: Path) -> None:
        stored = self.caches / re.sub(r"[^A-Za-z0-9.-]+", "-", self.cache_key(cache, variables))
        shutil.rmtree(stored, ignore_errors=True)  # GitLab's caches are replaced, not kept
        for pattern in cache.get("paths", []):
            for found in workspace.glob(expand(pattern, variables)):
                if found.is_file():
                    target = stored / found.relative_to(workspace)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(found, target)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python:X.Y` for the running version: that Python with pip (and the uv the generated
    install step asks pip for, already installed, as a warm image layer would have it)."""
    folder = tmp_path_factory.mktemp("image") / RUNNING
    venv.create(folder, with_pip=True, symlinks=True)
    subprocess.run(
        [str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "uv"],
        check=True,
        capture_output=True,
        timeout=JOB_TIMEOUT,
    )
    return folder


def test_gitlab_pipeline_runs_as_generated(lab: Lab, image: Path):
    """Durations handed out in .pre, 2 shards, merge with JUnit, Cobertura and the coverage
    regex matched; the second pipeline pulls the durations the first one pushed."""
    make_origin(lab.origin, FILES, PYPROJECT)
    written = lab.release.testfleet("ci", "gitlab", "--python", RUNNING, cwd=lab.origin)
    assert written.returncode == 0, written.stderr
    document = load(lab.origin / ".gitlab-ci.yml")
    spec = f"testfleet[valkey]=={__version__}"
    assert f"uv tool install '{spec}'" in document["test"]["before_script"]
    commit(lab.origin, "project with its generated pipeline")
    pipeline = Pipeline(document, lab, {RUNNING: image})
    jobs = pipeline.run()
    log = "\n\n".join(f"== {j.name}: exit {j.code}\n{j.log[-3000:]}" for j in jobs)
    names = [j.name for j in jobs]
    assert names == ["durations", f"test: [{RUNNING}, 1]", f"test: [{RUNNING}, 2]", "merge"], log
    durations, *shards, merge = jobs
    assert durations.code == 0, log
    assert sorted(j.code for j in shards) == [0, 1], log  # one shard has the failing test
    assert merge.code == 1, log  # merged: the failing test
    reports = merge.spec["artifacts"]["reports"]
    merged = outcomes(merge.workspace / reports["junit"])
    assert len(merged) == TESTS, log
    assert sorted(set(merged.values())) == ["failure", "passed", "skipped"]
    cobertura = merge.workspace / reports["coverage_report"]["path"]
    assert merge.coverage is not None, log  # GitLab's regex finds merge's total
    assert abs(float(merge.coverage) / 100 - line_rate(cobertura)) <= 0.01, log
    assert list(pipeline.caches.iterdir()), "merge pushed no durations"

    again = Pipeline(document, lab, {RUNNING: image})
    (lab.work / "gitlab").rename(lab.work / "gitlab-first")
    second = again.run()
    pulled = second[0].workspace / ".testfleet" / "durations.json"
    assert "tests/test_slow_a.py::test_work_0" in pulled.read_text(), "durations not pulled"
    assert second[-1].code == 1
