"""Where a project sits in its repository: CI systems read their files at the repository's
root, check the whole repository out, and run each job from its root, so a project in a
subfolder (a monorepo's `services/api`) needs its files at the root with its own working
directory and paths. And which branch is the default one, for the push trigger and the
durations cache to fall back to."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

FALLBACK_BRANCH = "main"


@dataclass(frozen=True)
class Placement:
    root: Path  # the repository's root (the project's root when it is not in one)
    project: PurePosixPath  # the project's folder from there: "." at the root
    default_branch: str
    branch_source: str  # how the default branch was found, for the file's header

    @property
    def at_root(self) -> bool:
        return self.project == PurePosixPath(".")

    def path(self, relative: str) -> str:
        """`relative` (to the project) as seen from the repository's root."""
        joined = self.project / relative
        return joined.as_posix() if not self.at_root else PurePosixPath(relative).as_posix()

    @property
    def slug(self) -> str:
        """services/api -> services-api: a file name for the project's own workflow."""
        return "-".join(self.project.parts)


def repository_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def default_branch(root: Path) -> tuple[str, str]:
    """The branch pushes to which CI tests, and how it was found: the remote's HEAD, else a
    local `main` or `master`, else the only local branch (or the one a new repository is
    about to make), else git's `init.defaultBranch`, else "main". Never merely the branch
    checked out among several: a file generated on a feature branch must test the trunk."""
    remote = _git(root, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    if remote and "/" in remote:
        return remote.split("/", 1)[1], "origin's HEAD"
    for name in ("main", "master"):
        if _git(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}"):
            return name, f"the local branch {name}"
    local = (_git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads") or "").split()
    if len(local) == 1:
        return local[0], "the only local branch"
    head = _git(root, "symbolic-ref", "--quiet", "--short", "HEAD")
    if not local and head:
        return head, "the branch of the repository's first commit"
    configured = _git(root, "config", "init.defaultBranch")
    if configured:
        return configured, "git's init.defaultBranch"
    return FALLBACK_BRANCH, "no default branch found"


def place(project_root: Path) -> Placement:
    resolved = project_root.resolve()
    root = repository_root(resolved)
    if root is None:
        return Placement(resolved, PurePosixPath("."), FALLBACK_BRANCH, "no git repository")
    branch, source = default_branch(root)
    relative = PurePosixPath(resolved.relative_to(root).as_posix())
    return Placement(root, relative, branch, source)
