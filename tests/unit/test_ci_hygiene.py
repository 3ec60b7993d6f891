"""The generated CI files as an engineer adopting them would check them: pinned actions, per-job
permissions, runners and timeouts, re-runs, durations kept between runs, monorepos, the
generic reusable workflow, and zizmor's audit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from testfleet.ci import actions, install
from testfleet.cli import build_parser
from testfleet.commands import Call
from testfleet.commands import ci as ci_command
from testfleet.errors import ConfigError
from tests.helpers import write_pyproject

TINY = "[tool.testfleet]\n\n[tool.testfleet.services.valkey]\n"
VENV_BIN = str(Path(sys.executable).parent)
SHA = re.compile(r"[0-9a-f]{40}")


@pytest.fixture(autouse=True)
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release from an index stands for this editable checkout (see test_ci_install.py)."""

    def from_index(extras: Iterable[str]) -> install.InstallSpec:
        return install.InstallSpec(install.from_direct_url(None, "1.2.3", extras), "test")

    monkeypatch.setattr(install, "installed", from_index)


def tool(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]))
    assert found, f"{name} is missing: install the dev extra (pip install -e '.[dev]')"
    return found


def generate(root: Path, *argv: str) -> int:
    args = build_parser("ci").parse_args(["-C", str(root), "ci", *argv])
    return ci_command.main(Call(args))


def load(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose default branch is `trunk`, the project at its root."""
    root = write_pyproject(tmp_path / "repo", TINY)
    git("init", "-q", "-b", "trunk", cwd=root)
    return root


def jobs_of(workflow: Any) -> dict[str, Any]:
    return {name: job for name, job in workflow["jobs"].items()}


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith(action + "@")]


def every_file(root: Path) -> Iterator[Path]:
    yield from sorted((root / ".github/workflows").glob("*.yml"))


def test_every_action_is_pinned_to_a_commit_with_its_version(repo: Path):
    generate(
        repo,
        "github",
        "--reusable",
        "-o",
        ".github/workflows/r.yml",
        "--caller",
        ".github/workflows/c.yml",
    )
    generate(repo, "github")
    uses = []
    for path in every_file(repo):
        for line in path.read_text().splitlines():
            if "uses: " in line and "./.github" not in line:
                uses.append(line.strip())
    assert uses
    for line in uses:
        match = re.fullmatch(r"(?:- )?uses: ([\w./-]+)@([0-9a-f]+)  # (v\d+\.\d+\.\d+)", line)
        assert match, line
        assert SHA.fullmatch(match.group(2)), line
    table = {(a.repository, a.version): a.commit for a in actions.ALL}
    assert all(SHA.fullmatch(commit) for commit in table.values())
    assert len({a.commit for a in actions.ALL if a.repository == "actions/cache"}) == 1


def test_runners_timeouts_and_permissions_on_every_job(repo: Path):
    """--runs-on and --timeout-minutes reach every job; the workflow grants nothing, each job
    reads the repository only; nothing inherits every secret."""
    labels = "self-hosted,linux,X64,kubernetes"
    generate(repo, "github", "--runs-on", labels, "--timeout-minutes", "25")
    generate(
        repo,
        "github",
        "--reusable",
        "--runs-on",
        labels,
        "--timeout-minutes",
        "25",
        "-o",
        ".github/workflows/r.yml",
        "--caller",
        ".github/workflows/c.yml",
    )
    plain = load(repo / ".github/workflows/tests.yml")
    assert plain["permissions"] == {}
    for name, job in jobs_of(plain).items():
        assert job["runs-on"] == labels.split(","), name
        assert job["timeout-minutes"] == (10 if name == "prepare" else 25), name
        assert job["permissions"] == {"contents": "read"}, name
    reusable = load(repo / ".github/workflows/r.yml")
    inputs = reusable["on"]["workflow_call"]["inputs"]
    assert json.loads(inputs["runs-on"]["default"]) == labels.split(",")
    assert inputs["timeout-minutes"]["default"] == 25
    for name, job in jobs_of(reusable).items():
        assert "inputs.runs-on" in job["runs-on"], name
        assert job["permissions"] == {"contents": "read"}, name
    caller = load(repo / ".github/workflows/c.yml")
    assert caller["jobs"]["tests"]["with"]["runs-on"] == json.dumps(labels.split(","))
    for path in every_file(repo):
        assert "secrets: inherit" not in path.read_text()
    generate(repo, "gitlab", "--runs-on", "k8s,linux", "--timeout-minutes", "25")
    pipeline = load(repo / ".gitlab-ci.yml")
    for name in ("durations", "test", "merge"):
        assert pipeline[name]["tags"] == ["k8s", "linux"]
        assert pipeline[name]["timeout"] == ("10 minutes" if name == "durations" else "25 minutes")


def test_the_ci_table_holds_runners_and_timeout(tmp_path: Path):
    root = write_pyproject(
        tmp_path / "p",
        TINY + '\n[tool.testfleet.ci]\nruns-on = ["self-hosted", "gpu"]\ntimeout-minutes = 12\n',
    )
    generate(root, "github")
    test = load(root / ".github/workflows/tests.yml")["jobs"]["test"]
    assert (test["runs-on"], test["timeout-minutes"]) == (["self-hosted", "gpu"], 12)
    generate(root, "github", "--runs-on", "ubuntu-24.04")  # the flag wins
    test = load(root / ".github/workflows/tests.yml")["jobs"]["test"]
    assert test["runs-on"] == "ubuntu-24.04"


def test_triggers_concurrency_and_re_runs(repo: Path):
    """Pushes to the default branch and pull requests (a pull request's commits are not run
    twice), one run per pull request at a time, and every upload can be repeated by a re-run."""
    generate(repo, "github")
    workflow = load(repo / ".github/workflows/tests.yml")
    assert workflow["on"] == {
        "push": {"branches": ["trunk"]},
        "pull_request": {},
        "workflow_dispatch": {},
    }
    assert workflow["concurrency"]["cancel-in-progress"] == (
        "${{ github.event_name == 'pull_request' }}"
    )
    assert "header" not in workflow
    text = (repo / ".github/workflows/tests.yml").read_text()
    assert "# Default branch: trunk (git's init.defaultBranch)" in text or (
        "# Default branch: trunk" in text
    )
    uploads = [
        s for job in jobs_of(workflow).values() for s in steps_using(job, "actions/upload-artifact")
    ]
    assert len(uploads) == 3  # durations, shard results, merged reports
    assert all(step["with"]["overwrite"] is True for step in uploads)
    for job in jobs_of(workflow).values():
        for step in job["steps"]:
            assert "always()" not in str(step.get("if", "")), step  # never after a cancel


def test_durations_are_handed_to_every_shard_and_kept(repo: Path, tmp_path: Path):
    """prepare restores the branch's (else the default branch's) last merged durations and
    hands the same file to every shard; merge merges into it and saves it under a new key."""
    generate(repo, "github")
    workflow = load(repo / ".github/workflows/tests.yml")
    prepare = workflow["jobs"]["prepare"]
    (restore,) = steps_using(prepare, "actions/cache/restore")
    assert restore["with"]["path"] == ".testfleet/durations.json"
    keys = restore["with"]["restore-keys"].splitlines()
    assert keys == [
        "testfleet-durations-${{ github.head_ref || github.ref_name }}-",
        "testfleet-durations-${{ github.event.repository.default_branch }}-",
    ]
    ensure = next(s for s in prepare["steps"] if s.get("id") == "durations")
    work = tmp_path / "work"
    work.mkdir()
    output = tmp_path / "output"
    subprocess.run(
        ["bash", "-eo", "pipefail", "-c", ensure["run"]],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "GITHUB_OUTPUT": str(output), **ensure["env"]},
        check=True,
    )
    written = json.loads((work / ".testfleet/durations.json").read_text())
    assert written == {"version": 1, "durations": {}}
    assert output.read_text().splitlines() == [
        "file=.testfleet/durations.json",
        "dir=.testfleet",
    ]
    test, merge = workflow["jobs"]["test"], workflow["jobs"]["merge"]
    for job in (test, merge):
        (download,) = [
            s
            for s in steps_using(job, "actions/download-artifact")
            if s["with"].get("name") == "durations"
        ]
        assert download["with"]["path"] == "${{ needs.prepare.outputs.durations-dir }}"
    names = [s["name"] for s in merge["steps"]]
    assert names.index("Download the durations every shard plans from") < names.index(
        "Merge the shards"
    )
    (save,) = steps_using(merge, "actions/cache/save")
    assert save["with"]["key"].endswith("${{ github.run_id }}-${{ github.run_attempt }}")
    assert "!cancelled()" in save["if"]


def test_a_project_in_a_subfolder_gets_a_root_workflow(repo: Path):
    """`testfleet -C services/api ci github`: the workflow goes where GitHub reads it, runs
    in the project's folder, keys its caches on the project's files and runs when they
    change; GitLab's file goes to the root and changes into the folder."""
    api = write_pyproject(repo / "services" / "api", TINY)
    assert generate(api, "github") == 0
    assert not (api / ".github").exists()
    path = repo / ".github/workflows/tests-services-api.yml"
    workflow = load(path)
    assert workflow["on"]["push"]["paths"] == [
        "services/api/**",
        ".github/workflows/tests-services-api.yml",
    ]
    test = workflow["jobs"]["test"]
    assert test["defaults"] == {"run": {"working-directory": "services/api"}}
    (cache,) = steps_using(test, "actions/cache")
    assert "hashFiles('services/api/pyproject.toml')" in cache["with"]["key"]
    assert test["steps"][-1]["with"]["path"] == "services/api/.testfleet/shards/"
    merge = workflow["jobs"]["merge"]
    assert "services/api/.testfleet/junit.xml" in merge["steps"][-2]["with"]["path"]
    assert "testfleet -C services/api ci github" in path.read_text()
    assert generate(api, "gitlab") == 0
    pipeline = load(repo / ".gitlab-ci.yml")
    assert pipeline["test"]["before_script"][-1] == "cd services/api"
    assert pipeline["merge"]["artifacts"]["reports"]["junit"] == "services/api/.testfleet/junit.xml"


def test_the_generic_workflow_needs_no_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """`ci github --reusable --generic` in a repository with no pyproject.toml: inputs for the
    caller's folder and durations, every toggle off by default, no project's jobs."""
    shared = tmp_path / "shared-workflows"
    shared.mkdir()
    git("init", "-q", "-b", "main", cwd=shared)
    assert generate(shared, "github", "--reusable", "--generic", "--python", "3.12") == 0
    files = sorted(p.name for p in (shared / ".github/workflows").iterdir())
    assert files == ["testfleet.yml"]  # no caller: callers live in other repositories
    workflow = load(shared / ".github/workflows/testfleet.yml")
    inputs = workflow["on"]["workflow_call"]["inputs"]
    assert inputs["working-directory"]["default"] == "."
    assert inputs["durations-file"]["default"] == ".testfleet/durations.json"
    assert all(inputs[f"enable-{t}"]["default"] is False for t in ("postgresql", "valkey"))
    assert set(workflow["jobs"]) == {"prepare", "test", "merge"}
    test = workflow["jobs"]["test"]
    assert test["defaults"] == {"run": {"working-directory": "${{ inputs.working-directory }}"}}
    run = next(step for step in test["steps"] if step.get("name") == "Run this shard")
    assert run["env"]["TESTFLEET_DURATIONS"] == "${{ inputs.durations-file }}"
    assert "uses: OWNER/REPO/.github/workflows/testfleet.yml@COMMIT" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="add --reusable"):
        generate(shared, "github", "--generic")
    with pytest.raises(ConfigError, match="--shards auto needs a project"):
        generate(shared, "github", "--reusable", "--generic", "--shards", "auto")


def zizmor(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", "--min-severity", "high", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_zizmor_finds_nothing_high_in_any_generated_workflow(repo: Path):
    """Every GitHub file `testfleet ci` writes, with the flags that change them most."""
    labels = "self-hosted,linux,X64,kubernetes"
    generate(
        repo,
        "github",
        "--runs-on",
        labels,
        "--index",
        "corp",
        "--pytest-args=-q",
        "-o",
        ".github/workflows/plain.yml",
    )
    generate(repo, "github", "--reusable", "--runs-on", labels, "--index", "corp")
    generate(repo, "github", "--reusable", "--generic", "-o", ".github/workflows/generic.yml")
    audit = zizmor(repo)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert len(list(every_file(repo))) == 4


def test_zizmor_would_notice(repo: Path):
    """The audit above can fail: an unpinned action and an inherited secret are high."""
    generate(repo, "github")
    path = repo / ".github/workflows/tests.yml"
    text = re.sub(r"actions/checkout@[0-9a-f]{40}", "actions/checkout@v4", path.read_text())
    path.write_text(text)
    audit = zizmor(repo)
    assert audit.returncode != 0
    assert "unpinned-uses" in audit.stdout + audit.stderr
