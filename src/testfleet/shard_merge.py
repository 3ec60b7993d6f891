"""`testfleet merge`'s side of CI shards: each shard directory read back with every file
checked, the shards checked against each other, every result against its own shard's
manifest, and then joined.

A shard directory is an artifact that travelled through CI uploads and downloads: it can be
cut short, mixed with another shard's, or edited. Merge trusts none of it. A file of the wrong
shape, a result its shard did not run (or twice), a test its shard ran without a result, or a
duration no clock measures is one line naming the file, the test and the fix (exit 2), never a
traceback and never a green merge.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testfleet import durations
from testfleet.errors import ConfigError
from testfleet.project import Project
from testfleet.reports.results_file import read_results
from testfleet.results import TestResult
from testfleet.shards import FORMAT, FORMAT_VERSION, MANIFEST, SHARDS_DIR, shard_name
from testfleet.values import MAX_SHARDS

# The fix for a shard whose files do not hold together: only its job can write them again.
REDO = (
    "its files were cut short or changed after its job wrote them: run that shard's job again"
    " and download its artifact afresh"
)


@dataclass(frozen=True)
class Group:
    """One Python's share of a shard, as its manifest records it."""

    python: str  # the version it ran on
    collected: tuple[str, ...]  # the whole suite, as this shard collected it
    selected: tuple[str, ...]  # this shard's share of it


@dataclass(frozen=True)
class Shard:
    path: Path
    index: int
    count: int
    fingerprint: str
    groups: Mapping[str, Group]  # by matrix label ("" without a matrix)
    results: list[TestResult]
    collect_errors: dict[str, str]
    problems: list[str]
    coverage: bool  # whether it measured coverage
    root: str  # the checkout it ran in: its coverage data names files there
    durations: dict[str, float]  # what it measured, for the durations file


class _Bad(ValueError):
    """What is wrong in a manifest, in words that follow the file's path."""


def _required(data: Mapping[str, Any], key: str, where: str = "") -> Any:
    if key not in data:
        raise _Bad(f"{where}has no {key!r}")
    return data[key]


def _whole(data: Mapping[str, Any], key: str) -> int:
    value = _required(data, key)
    # bool is an int to isinstance, but shard `true` is no shard.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{key!r} is {durations.shown(value)}, not a whole number")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{what} is {durations.shown(value)}, not a string")
    return value


def _test_ids(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{what} is not a list of test ids")
    return tuple(value)


def _group(label: str, value: object) -> Group:
    where = f"group {label!r}"
    if not isinstance(value, dict):
        raise _Bad(f"{where} is not an object")
    python = _text(_required(value, "python", f"{where} "), f"'python' of {where}")
    collected = _test_ids(_required(value, "collected", f"{where} "), f"'collected' of {where}")
    selected = _test_ids(_required(value, "selected", f"{where} "), f"'selected' of {where}")
    known, seen = set(collected), set()
    for nodeid in selected:
        if nodeid in seen:
            raise _Bad(f"'selected' of {where} lists {nodeid} twice")
        if nodeid not in known:
            raise _Bad(f"{where} selects {nodeid}, which it did not collect")
        seen.add(nodeid)
    return Group(python, collected, selected)


@dataclass(frozen=True)
class _Manifest:
    index: int
    count: int
    fingerprint: str
    groups: dict[str, Group]
    problems: list[str]
    coverage: bool
    root: str


def _manifest(path: Path, data: Mapping[str, Any]) -> _Manifest:
    """The manifest's fields, each of its type, or _Bad."""
    index, count = _whole(data, "shard"), _whole(data, "shards")
    if not 1 <= index <= count <= MAX_SHARDS:
        raise _Bad(f"shard {index} of {count} is not a shard (1 <= I <= M <= {MAX_SHARDS})")
    groups = _required(data, "groups")
    if not isinstance(groups, dict):
        raise _Bad(f"'groups' is {durations.shown(groups)}, not an object")
    if not groups:
        raise _Bad("'groups' is empty: the shard ran no Python")
    problems = data.get("problems", [])
    if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
        raise _Bad(f"'problems' is {durations.shown(problems)}, not a list of strings")
    # coverage and root were added within format version 1: older manifests lack them.
    coverage = data.get("coverage", (path / "coverage").is_dir())
    if not isinstance(coverage, bool):
        raise _Bad(f"'coverage' is {durations.shown(coverage)}, not true or false")
    return _Manifest(
        index,
        count,
        _text(_required(data, "fingerprint"), "'fingerprint'"),
        {label: _group(label, value) for label, value in groups.items()},
        problems,
        coverage,
        _text(data.get("root", ""), "'root'"),
    )


def _durations(path: Path, tests: set[str]) -> dict[str, float]:
    """A shard's durations.json: what it measured of its own tests, each a plausible time."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"{path}: not a readable shard durations file ({reason}); {REDO}"
        ) from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: not a shard durations file ({kind}, not an object); {REDO}")
    table = data.get("durations")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'durations' is not an object; {REDO}")
    for nodeid, value in table.items():
        why = durations.unusable(value)
        if why is not None:
            shown = durations.shown(value)
            raise ConfigError(f"{path}: the duration of {nodeid}, {shown}, is {why}; {REDO}")
        if nodeid not in tests:
            raise ConfigError(f"{path}: {nodeid} is not one of this shard's tests; {REDO}")
    return {nodeid: float(value) for nodeid, value in table.items()}


def read_shard(path: Path) -> Shard:
    """A shard directory, every file of it checked for its shape (not yet against others)."""
    manifest = path / MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path} is not a complete shard directory (no {MANIFEST}): its job stopped before"
            " writing it, or the artifact was not fully uploaded or downloaded"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{manifest}: not a readable shard manifest ({exc})") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{manifest}: not a shard manifest ({kind}, not an object); {REDO}")
    if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
        raise ConfigError(
            f"{manifest}: written by another testfleet version (format"
            f" {data.get('version')!r}); run every shard and the merge with the same testfleet"
        )
    try:
        m = _manifest(path, data)
    except _Bad as exc:
        raise ConfigError(f"{manifest}: {exc}; {REDO}") from None
    try:
        results, errors, _ = read_results(path / "results.json")
    except ConfigError as exc:
        raise ConfigError(f"{exc.message}; {REDO}") from None
    tests = {nodeid for group in m.groups.values() for nodeid in group.selected}
    return Shard(
        path,
        m.index,
        m.count,
        m.fingerprint,
        m.groups,
        results,
        errors,
        m.problems,
        m.coverage,
        m.root,
        _durations(path / "durations.json", tests),
    )


def find_shard_dirs(project: Project, given: Sequence[str]) -> list[Path]:
    if given:
        dirs = [Path(d) if Path(d).is_absolute() else Path.cwd() / d for d in given]
        for folder in dirs:
            if not folder.is_dir():
                raise ConfigError(f"testfleet merge {folder}: no such directory")
        return dirs
    base = project.root / SHARDS_DIR
    dirs = sorted(p for p in base.glob("*-of-*") if p.is_dir()) if base.is_dir() else []
    if not dirs:
        raise ConfigError(
            f"no shard directories under {base}; run `testfleet run --shard I/M` on each"
            " machine and gather their .testfleet/shards/ here, or name the directories"
        )
    return dirs


def check_complete(shards: Sequence[Shard]) -> None:
    """Every shard of every Python once; every collected test in exactly one shard."""
    counts = {s.count for s in shards}
    if len(counts) != 1:
        listing = ", ".join(f"{s.path.name} (of {s.count})" for s in shards)
        raise ConfigError(f"the shards were split different ways: {listing}; merge one split")
    count = counts.pop()
    measured = [s for s in shards if s.coverage]
    if measured and len(measured) != len(shards):
        other = next(s for s in shards if not s.coverage)
        raise ConfigError(
            f"shard {measured[0].path.name} measured coverage and {other.path.name} did not:"
            " the merged total would miss a share; run every shard with --coverage, or none"
        )
    prints = {s.fingerprint for s in shards}
    if len(prints) != 1:
        first = shards[0]
        other = next(s for s in shards if s.fingerprint != first.fingerprint)
        raise ConfigError(
            f"shards {first.path.name} and {other.path.name} were planned from different"
            " configs or durations (pytest-args, group-by, order or the durations file);"
            " every shard must run the same commit with the same durations file"
        )
    labels = sorted({label for s in shards for label in s.groups})
    for label in labels:
        mine = [s for s in shards if label in s.groups]
        what = f" for python {label}" if label else ""
        seen: dict[int, Path] = {}
        for s in mine:
            if s.index in seen:
                raise ConfigError(
                    f"shard {s.index}-of-{count}{what} appears twice ({seen[s.index]} and"
                    f" {s.path}); merge each shard once"
                )
            seen[s.index] = s.path
        missing = sorted(set(range(1, count + 1)) - set(seen))
        if missing:
            names = ", ".join(f"{i}-of-{count}" for i in missing)
            raise ConfigError(
                f"shard {names}{what} is missing; its job failed or its artifact was not"
                f" downloaded into {SHARDS_DIR}"
            )
        collected = set(mine[0].groups[label].collected)
        for s in mine[1:]:
            theirs = set(s.groups[label].collected)
            if theirs != collected:
                example = sorted(theirs ^ collected)[0]
                raise ConfigError(
                    f"shards {mine[0].path.name} and {s.path.name}{what} collected different"
                    f" tests (e.g. {example}); every shard must run the same commit"
                )
        owner: dict[str, str] = {}
        for s in mine:
            for nodeid in s.groups[label].selected:
                if nodeid in owner:
                    raise ConfigError(
                        f"{nodeid}{what} ran in two shards ({owner[nodeid]} and {s.path.name})"
                    )
                owner[nodeid] = s.path.name
        unrun = sorted(collected - set(owner))
        if unrun:
            raise ConfigError(
                f"{unrun[0]}{what} was collected but is in no shard"
                f" ({len(unrun)} such test(s)); the shards were planned inconsistently"
            )


def _on(python: str) -> str:
    return f" on python {python}" if python else ""


def check_results(shards: Sequence[Shard]) -> list[TestResult]:
    """Every shard's results, each one of its own shard's tests for its own Python, once, and
    every test a shard ran with its result: a duplicated, extra or moved result, or a missing
    one (a failure dropped), is refused. A shard cut short says why in its manifest; what it
    lacks is then reported as not run, which fails the merge for that reason."""
    owner = {
        (label, nodeid): s.path.name
        for s in shards
        for label, group in s.groups.items()
        for nodeid in group.selected
    }
    # Extra and duplicated results first, in every shard: a result moved from one shard to
    # another is then named where it landed, with the shard it belongs to.
    for s in shards:
        seen: set[tuple[str, str]] = set()
        for r in s.results:
            key = (r.python, r.nodeid)
            if key in seen:
                raise ConfigError(
                    f"shard {s.path.name}: results.json has two results for"
                    f" {r.nodeid}{_on(r.python)}; {REDO}"
                )
            seen.add(key)
            if owner.get(key) != s.path.name:
                whose = (
                    f"which is shard {owner[key]}'s test"
                    if key in owner
                    else "which is not one of this shard's tests"
                )
                raise ConfigError(
                    f"shard {s.path.name}: results.json has a result for"
                    f" {r.nodeid}{_on(r.python)}, {whose}; {REDO}"
                )
    merged: list[TestResult] = []
    for s in sorted(shards, key=lambda s: s.index):
        merged += s.results
        have = {(r.python, r.nodeid) for r in s.results}
        for label, group in s.groups.items():
            lacking = [nodeid for nodeid in group.selected if (label, nodeid) not in have]
            if lacking and not s.problems:
                raise ConfigError(
                    f"shard {s.path.name}: results.json has no result for"
                    f" {lacking[0]}{_on(label)}, which shard.json says this shard ran"
                    f" ({len(lacking)} such test(s)); {REDO}"
                )
            merged += [
                TestResult(
                    nodeid,
                    "not run",
                    message=f"not run: {s.problems[0]}",
                    timed=False,
                    python=label,
                    shard=shard_name((s.index, s.count)),
                )
                for nodeid in lacking
            ]
    return merged


@dataclass(frozen=True)
class Merged:
    results: list[TestResult]
    collect_errors: dict[str, str]
    versions: dict[str, str]
    shards: int
    coverage_pieces: list[Path]
    problems: list[str]  # "shard 2-of-3: the run timed out"
    coverage: bool = False  # the shards measured coverage
    roots: tuple[str, ...] = ()  # the checkouts the shards ran in
    durations: dict[str, float] = field(default_factory=dict)  # what every shard measured


def merge_shards(project: Project, dirs: Iterable[Path], coverage_into: Path) -> Merged:
    """Check the shards, then join their results (and gather their coverage data, which names
    files in the checkouts the shards ran in: see `roots`)."""
    shards = [read_shard(d) for d in dirs]
    check_complete(shards)
    results = check_results(shards)
    versions: dict[str, str] = {}
    for s in shards:
        for name, group in s.groups.items():
            versions.setdefault(name, group.python)
    errors = {k: v for s in shards for k, v in s.collect_errors.items()}
    pieces = []
    for s in shards:
        for piece in sorted(p for p in (s.path / "coverage").glob("*") if p.is_file()):
            # Named as coverage.py names the pieces it combines, unique across the shards.
            target = coverage_into / f".coverage.{s.path.name}.{piece.name.lstrip('.')}"
            shutil.copy2(piece, target)
            pieces.append(target)
    problems = [f"shard {s.path.name}: {p}" for s in shards for p in s.problems]
    return Merged(
        results,
        errors,
        versions,
        shards[0].count,
        pieces,
        problems,
        coverage=any(s.coverage for s in shards),
        roots=tuple(dict.fromkeys(s.root for s in shards if s.root)),
        # For the next split to learn from every machine.
        durations={k: v for s in shards for k, v in s.durations.items()},
    )
