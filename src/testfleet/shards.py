"""CI shards: one machine's share of the suite written as an artifact directory, and
`testfleet merge`, which joins every machine's directory into one set of reports.

Each shard collects the whole suite and plans the same split from the same collection and
durations, so M machines cover every test exactly once. The artifact records what it
collected and what it ran, so merge can prove that: a missing shard, a test in no shard or in
two, or shards planned from different inputs are errors that name what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testfleet import __version__
from testfleet.errors import ConfigError
from testfleet.files import write_atomic
from testfleet.lanes.outcome import RunOutcome
from testfleet.project import Project
from testfleet.reports import coverage as coverage_report
from testfleet.reports.junit import write_junit
from testfleet.reports.results_file import read_results, write_results
from testfleet.results import TestResult

FORMAT = "testfleet-shard"
FORMAT_VERSION = 1
MANIFEST = "shard.json"
SHARDS_DIR = Path(".testfleet") / "shards"


def shard_name(shard: tuple[int, int]) -> str:
    return f"{shard[0]}-of-{shard[1]}"


def coverage_file(folder: Path) -> Path:
    """A shard's coverage data: every lane's and every measured server's, combined. Not a
    dot-file: CI artifact uploads leave hidden files out by default (upload-artifact v4)."""
    return folder / "coverage" / f"{folder.name}.coverage"


def shard_dir(project: Project, shard: tuple[int, int], labels: Sequence[str] = ()) -> Path:
    """`.testfleet/shards/2-of-4`, or with a matrix `2-of-4-py3.12`: CI gathers every job's
    directory into one place, and jobs of different versions must not write the same one."""
    suffix = "-py" + "+".join(labels) if any(labels) else ""
    return project.root / SHARDS_DIR / f"{shard_name(shard)}{suffix}"


def label(outcome: RunOutcome, shard: tuple[int, int]) -> RunOutcome:
    """The outcome with every result marked as this shard's."""
    name = shard_name(shard)
    groups = tuple(
        dataclasses.replace(
            group, results=tuple(dataclasses.replace(r, shard=name) for r in group.results)
        )
        for group in outcome.groups
    )
    return dataclasses.replace(outcome, groups=groups)


def unfinished(outcome: RunOutcome) -> list[str]:
    """Why a shard did not run all of its share, if it did not: merge must not call a run
    green that a dead service or a timeout cut short."""
    problems = []
    if outcome.fatal:
        problems.append(outcome.fatal)
    if outcome.timed_out:
        problems.append("the run timed out")
    if outcome.interrupted:
        problems.append("the run was interrupted")
    if outcome.stopping:
        problems.append(f"stopped early: {outcome.stopping}")
    for group in outcome.groups:
        if group.collected is None and not group.collect_errors:
            where = f"python {group.label}" if group.label else "the suite"
            problems.append(f"{where} was never collected (its lanes failed first)")
    return problems


def fingerprint(project: Project, measured: Mapping[str, float], *, keep_order: bool) -> str:
    """What the split depends on: shards planned from different inputs cannot be merged."""
    config = project.config
    basis = {
        "testfleet": __version__,
        "pytest-args": list(config.pytest_args),
        "group-by": config.group_by,
        "keep-order": keep_order,
        "durations": sorted(measured.items()),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _write_json(path: Path, data: object) -> None:
    write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def write_shard(
    project: Project,
    shard: tuple[int, int],
    outcome: RunOutcome,
    versions: Mapping[str, str],
    *,
    measured: Mapping[str, float],
    keep_order: bool,
    coverage_dir: Path | None,
) -> Path:
    """`.testfleet/shards/I-of-M/`: results, JUnit, coverage data, durations, and last the
    manifest, so a directory without one is known to be incomplete."""
    folder = shard_dir(project, shard, [g.label for g in outcome.groups])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    results = outcome.results
    write_results(
        folder / "results.json",
        results,
        python=",".join(versions.values()),
        collect_errors=outcome.collect_errors,
    )
    write_junit(folder / "junit.xml", results, versions=versions)
    ran = {r.nodeid: round(r.duration, 4) for r in results if r.timed}
    _write_json(folder / "durations.json", {"version": 1, "durations": ran})
    if coverage_dir is not None:
        # One data file, the paths as measured in this checkout: merge maps them to its own.
        coverage_report.gather(project, coverage_dir, coverage_file(folder))
    _write_json(
        folder / MANIFEST,
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "shard": shard[0],
            "shards": shard[1],
            "fingerprint": fingerprint(project, measured, keep_order=keep_order),
            "problems": unfinished(outcome),
            "coverage": coverage_dir is not None,
            "root": str(project.root),
            "groups": {
                group.label: {
                    "python": versions.get(group.label, group.label),
                    "collected": list(group.collected or ()),
                    "selected": list(group.selected),
                }
                for group in outcome.groups
            },
        },
    )
    return folder


@dataclass(frozen=True)
class Shard:
    path: Path
    index: int
    count: int
    fingerprint: str
    groups: Mapping[str, Mapping[str, Any]]
    results: list[TestResult]
    collect_errors: dict[str, str]
    problems: list[str]
    coverage: bool  # whether it measured coverage
    root: str  # the checkout it ran in: its coverage data names files there


def _read_shard(path: Path) -> Shard:
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
    if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
        raise ConfigError(
            f"{manifest}: written by another testfleet version (format"
            f" {data.get('version')!r}); run every shard and the merge with the same testfleet"
        )
    results, errors, _ = read_results(path / "results.json")
    return Shard(
        path,
        int(data["shard"]),
        int(data["shards"]),
        str(data["fingerprint"]),
        data["groups"],
        results,
        errors,
        [str(p) for p in data.get("problems", [])],
        bool(data.get("coverage", (path / "coverage").is_dir())),
        str(data.get("root", "")),
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
        collected = set(mine[0].groups[label]["collected"])
        for s in mine[1:]:
            theirs = set(s.groups[label]["collected"])
            if theirs != collected:
                example = sorted(theirs ^ collected)[0]
                raise ConfigError(
                    f"shards {mine[0].path.name} and {s.path.name}{what} collected different"
                    f" tests (e.g. {example}); every shard must run the same commit"
                )
        owner: dict[str, str] = {}
        for s in mine:
            for nodeid in s.groups[label]["selected"]:
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


def merge_shards(project: Project, dirs: Iterable[Path], coverage_into: Path) -> Merged:
    """Check the shards, then join their results (and gather their coverage data, which names
    files in the checkouts the shards ran in: see `roots`)."""
    shards = [_read_shard(d) for d in dirs]
    check_complete(shards)
    versions: dict[str, str] = {}
    for s in shards:
        for name, group in s.groups.items():
            versions.setdefault(name, str(group["python"]))
    results = [r for s in sorted(shards, key=lambda s: s.index) for r in s.results]
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
    )


def merged_durations(dirs: Iterable[Path]) -> dict[str, float]:
    """What every shard measured, for the next split to learn from every machine."""
    measured: dict[str, float] = {}
    for folder in dirs:
        try:
            data = json.loads((folder / "durations.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        measured.update(
            {str(k): float(v) for k, v in data.get("durations", {}).items() if v is not None}
        )
    return measured
