"""Benchmarks for the CI fleet, measured in one run on this machine:

- the Python matrix: the example project on three versions one after another (three
  `testfleet run --python X` commands) against side by side on one stack (one
  `testfleet run --python X,Y,Z`), environments warm; and the cold environment build;
- shard balance: a seeded synthetic suite split into M = 2 and 4 shards by measured durations;
  each shard is run for real, and the figure is the slowest shard's test time over the mean
  (1.0 is perfect), with the planner's own estimate beside it.

    python bench/fleet.py [--rounds 2] [--tests 200] [--lanes 2]

Writes bench/results/fleet-<date>.json and the "CI fleet" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(HERE))

from run import machine  # noqa: E402
from suite import generate  # noqa: E402

from testfleet.venvs import installed_pythons  # noqa: E402

BEGIN, END = "<!-- fleet -->", "<!-- /fleet -->"


def testfleet(project: Path, *args: str) -> float:
    """Wall seconds of one `testfleet` command, which must pass."""
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "testfleet", *args],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"testfleet {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return took


def three_versions() -> list[str]:
    def key(version: str) -> tuple[int, ...]:
        return tuple(int(p) for p in version.split("."))

    found = {".".join(v.split(".")[:2]) for v in installed_pythons()}
    usable = sorted((v for v in found if key(v) >= (3, 10)), key=key)
    if len(usable) < 3:
        raise SystemExit(f"needs three Python versions >= 3.10, found {usable}")
    return usable[-3:]


def matrix(rounds: int, lanes: int) -> dict[str, object]:
    versions = three_versions()
    with tempfile.TemporaryDirectory(prefix="fleet-matrix-") as folder:
        project = Path(folder) / "bookshop"
        shutil.copytree(
            REPO / "examples" / "bookshop",
            project,
            ignore=shutil.ignore_patterns(".testfleet", "*.egg-info", "__pycache__"),
        )
        everything = ",".join(versions)
        cold = testfleet(project, "run", "--python", everything, "-n", str(lanes))
        sequential, side_by_side = [], []
        for _ in range(rounds):
            sequential.append(
                sum(testfleet(project, "run", "--python", v, "-n", str(lanes)) for v in versions)
            )
            side_by_side.append(testfleet(project, "run", "--python", everything, "-n", str(lanes)))
    seq, side = statistics.median(sequential), statistics.median(side_by_side)
    return {
        "versions": versions,
        "lanes_per_version": lanes,
        "rounds": rounds,
        "cold_with_env_build_s": round(cold, 2),
        "sequential_s": [round(x, 2) for x in sequential],
        "side_by_side_s": [round(x, 2) for x in side_by_side],
        "sequential_median_s": round(seq, 2),
        "side_by_side_median_s": round(side, 2),
        "speedup": round(seq / side, 2),
    }


def shard_balance(tests: int, lanes: int) -> dict[str, object]:
    from testfleet.plan import estimate, make_units, shard_units

    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-shards-") as folder:
        project = Path(folder)
        generate(project, tests=tests, seed=3)
        testfleet(project, "run", "-n", str(lanes))  # measures the durations the split uses
        measured = json.loads((project / ".testfleet" / "durations.json").read_text())
        durations = measured["durations"]
        figures["tests"] = len(durations)
        figures["test_time_s"] = round(sum(durations.values()), 2)
        for count in (2, 4):
            busy, walls = [], []
            for index in range(1, count + 1):
                walls.append(
                    testfleet(project, "run", "--shard", f"{index}/{count}", "-n", str(lanes))
                )
                results = json.loads(
                    (
                        project / ".testfleet" / "shards" / f"{index}-of-{count}" / "results.json"
                    ).read_text()
                )["results"]
                busy.append(sum(r["duration"] for r in results if r["timed"]))
            nodeids = sorted(durations)
            units = make_units(nodeids, estimate(nodeids, durations), "module")
            planned = [
                sum(u.estimate for u in shard_units(units, i, count)) for i in range(1, count + 1)
            ]
            figures[f"M={count}"] = {
                "shard_test_time_s": [round(b, 2) for b in busy],
                "shard_wall_s": [round(w, 2) for w in walls],
                "max_over_mean_test_time": round(max(busy) / statistics.mean(busy), 3),
                "max_over_mean_wall": round(max(walls) / statistics.mean(walls), 3),
                "planned_max_over_mean": round(max(planned) / statistics.mean(planned), 3),
            }
    return figures


def render(result: dict[str, object]) -> str:
    m = result["matrix"]
    s = result["shards"]
    assert isinstance(m, dict)
    assert isinstance(s, dict)
    lines = [
        BEGIN,
        "## CI fleet (`bench/fleet.py`)",
        "",
        f"Measured {result['when']} on {result['machine']}.",
        "",
        f"**Python matrix**: the example project (36 tests) on {', '.join(m['versions'])},"
        f" {m['lanes_per_version']} lanes per version, environments warm, median of"
        f" {m['rounds']} rounds.",
        "",
        "| contender | wall (s) |",
        "|---|---|",
        f"| three `testfleet run --python X`, one after another | {m['sequential_median_s']} |",
        f"| one `testfleet run --python {','.join(m['versions'])}`, side by side |"
        f" {m['side_by_side_median_s']} |",
        f"| speed-up | {m['speedup']}x |",
        f"| first run, building the three environments with uv | {m['cold_with_env_build_s']} |",
        "",
        f"**Shard balance**: the synthetic suite ({s['tests']} tests, {s['test_time_s']} s of"
        " test time, seed 3), split by its measured durations; every shard run for real,"
        " one after another, 2 lanes each.",
        "",
        "| M | shard test time (s) | max / mean test time | planned max / mean |"
        " shard wall (s) | max / mean wall |",
        "|---|---|---|---|---|---|",
    ]
    for count in (2, 4):
        f = s[f"M={count}"]
        lines.append(
            f"| {count} | {', '.join(map(str, f['shard_test_time_s']))} |"
            f" {f['max_over_mean_test_time']} | {f['planned_max_over_mean']} |"
            f" {', '.join(map(str, f['shard_wall_s']))} | {f['max_over_mean_wall']} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--lanes", type=int, default=2)
    args = parser.parse_args()
    result: dict[str, object] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "matrix": matrix(args.rounds, args.lanes),
        "shards": shard_balance(args.tests, args.lanes),
    }
    out = HERE / "results" / f"fleet-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    docs = REPO / "docs" / "benchmarks.md"
    text = docs.read_text()
    section = render(result)
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    docs.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
