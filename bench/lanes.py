"""Lane scaling on a suite with known durations: wall time of `testfleet run -n N` for
N = 1, 2, 4 against the ideal bound max(sum of test times / N, longest test).

The suite: 24 modules of sleeping tests (I/O-bound, like integration tests waiting on their
services) with lognormal durations (seeded), each using PostgreSQL and Valkey from its lane.
A first run measures the durations, so every measured run is "warm".

    python bench/lanes.py [--lanes 1 2 4] [--seed 3]

Prints a Markdown table; writes bench/results/lanes-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testfleet.plan import ideal_bound

HERE = Path(__file__).resolve().parent
PYPROJECT = """[project]
name = "lanes-bench"
version = "0"

[tool.testfleet]
pytest-args = ["-q", "-p", "no:cacheprovider"]
[tool.testfleet.services.postgres]
[tool.testfleet.services.valkey]
"""
MODULE = """import os, time
import psycopg, redis

def _touch_services():
    with psycopg.connect(os.environ["POSTGRES_URL"]) as conn:
        conn.execute("SELECT 1")
    redis.Redis.from_url(os.environ["VALKEY_URL"]).ping()
"""


def write_suite(root: Path, seed: int, modules: int = 24, per_module: int = 5) -> dict[str, float]:
    rng = random.Random(seed)
    planned: dict[str, float] = {}
    (root / "pyproject.toml").write_text(PYPROJECT)
    tests = root / "tests"
    tests.mkdir()
    for m in range(modules):
        body = [MODULE]
        for t in range(per_module):
            seconds = round(min(rng.lognormvariate(-2.2, 0.9), 2.5), 3)
            planned[f"tests/test_m{m:02d}.py::test_{t}"] = seconds
            body.append(f"def test_{t}():\n    _touch_services()\n    time.sleep({seconds})\n")
        (tests / f"test_m{m:02d}.py").write_text("\n".join(body))
    return planned


def run(root: Path, lanes: int) -> tuple[float, float, dict[str, float]]:
    """(command wall s, lanes phase wall s from the summary, measured durations)."""
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "testfleet", "run", "-n", str(lanes)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - began
    if out.returncode != 0:
        raise SystemExit(f"testfleet run -n {lanes} failed:\n{out.stderr[-3000:]}")
    phase = float(re.findall(r"passed in ([\d.]+) s", out.stderr)[-1])
    durations = json.loads((root / ".testfleet" / "durations.json").read_text())["durations"]
    return wall, phase, durations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lanes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_suite(root, args.seed)
        _, _, measured = run(root, 2)  # measure durations first: every row below is warm
        for lanes in args.lanes:
            wall, phase, measured = run(root, lanes)
            ideal = ideal_bound(list(measured.values()), lanes)
            rows.append(
                {
                    "lanes": lanes,
                    "command_wall_s": round(wall, 2),
                    "lanes_wall_s": round(phase, 2),
                    "ideal_s": round(ideal, 2),
                    "lanes_vs_ideal": round(phase / ideal, 3),
                    "command_vs_ideal": round(wall / ideal, 3),
                }
            )
        total = sum(measured.values())
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "tests": len(measured),
        "sum_of_test_times_s": round(total, 2),
        "longest_test_s": round(max(measured.values()), 2),
        "rows": rows,
    }
    out = HERE / "results" / f"lanes-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['tests']} tests, sum of test times {result['sum_of_test_times_s']} s,"
        f" longest {result['longest_test_s']} s\n"
    )
    print(
        "| lanes | `testfleet run` wall (s) | lanes phase (s) | ideal (s) | lanes / ideal |"
        " command / ideal |\n|---|---|---|---|---|---|"
    )
    for row in rows:
        print(
            f"| {row['lanes']} | {row['command_wall_s']} | {row['lanes_wall_s']} |"
            f" {row['ideal_s']} | {row['lanes_vs_ideal']} | {row['command_vs_ideal']} |"
        )
    print(f"\nwritten to {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
