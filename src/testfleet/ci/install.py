"""What the generated CI files install: exactly the testfleet that wrote them, pinned.

An unpinned name from the public index would install whatever is published under it that
day (or whatever someone else registers under it), in every adopter's CI. So the spec is,
in order: `--testfleet-spec`, `testfleet-spec` in `[tool.testfleet.ci]`, else read from how
this testfleet was installed (its `direct_url.json`, PEP 610): from an index, the version
(`testfleet[extras]==X.Y.Z`); from a Git repository, that repository at the installed commit;
from an archive URL, that URL with its hash. A local directory, an editable install or a local
file cannot be reached from CI, so then the user must say what CI installs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata

from testfleet import __version__
from testfleet.errors import ConfigError

DISTRIBUTION = "testfleet"
HOW_TO_CHOOSE = (
    "pass --testfleet-spec SPEC or set testfleet-spec in [tool.testfleet.ci], e.g."
    " 'testfleet[{extras}]=={version}' once it is on your index, or"
    " 'testfleet[{extras}] @ git+https://HOST/OWNER/REPO@COMMIT'"
)


@dataclass(frozen=True)
class InstallSpec:
    spec: str  # what `uv tool install` installs
    source: str  # where it came from, for the file's header


def _requirement(extras: Iterable[str]) -> str:
    names = sorted(set(extras))
    return f"{DISTRIBUTION}[{','.join(names)}]" if names else DISTRIBUTION


def _refuse(why: str, extras: Iterable[str]) -> ConfigError:
    names = ",".join(sorted(set(extras))) or "embedded"
    return ConfigError(
        f"{why}, which CI cannot install; "
        + HOW_TO_CHOOSE.format(extras=names, version=__version__)
    )


def from_direct_url(text: str | None, version: str, extras: Iterable[str]) -> str:
    """The spec that installs this distribution again, from its `direct_url.json` (None: it
    came from an index). Raises ConfigError when CI cannot reach where it came from."""
    extras = tuple(extras)
    requirement = _requirement(extras)
    if text is None:
        return f"{requirement}=={version}"
    try:
        data = json.loads(text)
        url = str(data["url"])
    except (ValueError, KeyError, TypeError):
        raise _refuse(
            "testfleet's install record (direct_url.json) is unreadable", extras
        ) from None
    subdirectory = data.get("subdirectory")
    fragment = f"#subdirectory={subdirectory}" if subdirectory else ""
    vcs = data.get("vcs_info")
    if isinstance(vcs, dict):
        commit = vcs.get("commit_id")
        if url.startswith("file:"):
            raise _refuse(
                f"testfleet was installed from a local {vcs.get('vcs')} repository", extras
            )
        if not commit:
            raise _refuse(f"testfleet was installed from {url} with no commit recorded", extras)
        return f"{requirement} @ {vcs.get('vcs', 'git')}+{url}@{commit}{fragment}"
    archive = data.get("archive_info")
    if isinstance(archive, dict):
        if url.startswith("file:"):
            raise _refuse(f"testfleet was installed from a local file ({url})", extras)
        hashes = archive.get("hashes")
        if isinstance(hashes, dict) and hashes.get("sha256"):
            fragment = f"#sha256={hashes['sha256']}"
        return f"{requirement} @ {url}{fragment}"
    editable = isinstance(data.get("dir_info"), dict) and data["dir_info"].get("editable")
    where = "an editable install" if editable else "a local directory"
    raise _refuse(f"testfleet runs from {where} ({url})", extras)


def installed(extras: Iterable[str]) -> InstallSpec:
    """The spec of the testfleet running now, with `extras`."""
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise _refuse("testfleet is not installed as a package here", extras) from None
    spec = from_direct_url(distribution.read_text("direct_url.json"), distribution.version, extras)
    return InstallSpec(spec, "the testfleet that wrote this file")


def choose(flag: str | None, configured: str | None, extras: Iterable[str]) -> InstallSpec:
    if flag is not None:
        return InstallSpec(flag, "--testfleet-spec")
    if configured is not None:
        return InstallSpec(configured, "testfleet-spec in [tool.testfleet.ci]")
    return installed(extras)
