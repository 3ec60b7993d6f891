"""Lanes on a suite whose modules are slow to import: `testfleet run -n 2` against
`pytest -n 2` (pytest-xdist) and serial `pytest`, and against lanes that each collect the
whole suite (TESTFLEET_SHARED_COLLECTION=0, the old way), all measured in the same run.

The suite: 50 modules that each take 0.3 s to import (a busy loop: import-time work costs
CPU, as in real suites that import big libraries), with 3 fast tests each, and no services.
Its conftest.py writes, for every pytest process, when the process started, when pytest's
collection finished there and which modules it imported: each lane's (or xdist worker's)
start-up and collection time, and whether a module was imported in more than one lane.
A first `testfleet run` (not measured) warms the bytecode cache and measures durations.

    python bench/collection.py [--modules 50] [--import-seconds 0.3] [--sleep]

Prints a Markdown table with the machine's load; writes bench/results/collection-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPROJECT = """[project]
name = "collection-bench"
version = "0"

[tool.pytest.ini_options]
addopts = "-p no:cacheprovider"

[tool.testfleet]
pytest-args = ["-q"]
"""
# Every pytest process (serial, an xdist worker, a lane) writes one line at the end: when it
# started (from /proc, so an early lane's wait counts too), when its collection finished,
# and the modules it imported.
CONFTEST = """import json, os, time
MARKS = {marks!r}
_ticks = os.sysconf("SC_CLK_TCK")
with open("/proc/stat") as f:
    _boot = next(int(l.split()[1]) for l in f if l.startswith("btime"))
with open("/proc/self/stat") as f:
    STARTED = _boot + int(f.read().rsplit(")", 1)[1].split()[19]) / _ticks
IMPORTED = []
_seen = {{}}

def pytest_collection_finish(session):
    _seen["collected"] = time.time()

def pytest_unconfigure(config):
    if "collected" not in _seen:
        return
    who = os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("TESTFLEET_LANE") or "main"
    with open(os.path.join(MARKS, f"{{os.getpid()}}.json"), "w") as out:
        json.dump({{"who": who, "started": STARTED, "collected": _seen["collected"],
                   "imported": IMPORTED}}, out)
"""
MODULE = """import time
import conftest
_end = time.perf_counter() + {seconds}
{work}
conftest.IMPORTED.append(__name__)
"""
BUSY = "while time.perf_counter() < _end:\n    pass"
SLEEP = "time.sleep(max(0.0, _end - time.perf_counter()))"
TESTS = 3


def write_suite(root: Path, marks: Path, modules: int, seconds: float, sleep: bool) -> None:
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "conftest.py").write_text(CONFTEST.format(marks=str(marks)))
    tests = root / "tests"
    tests.mkdir()
    work = SLEEP if sleep else BUSY
    for m in range(modules):
        body = MODULE.format(seconds=seconds, work=work)
        body += "".join(f"\n\ndef test_{t}():\n    assert {t} + 1 > {t}\n" for t in range(TESTS))
        (tests / f"test_m{m:02d}.py").write_text(body)


def measure(root: Path, marks: Path, argv: list[str], env: dict[str, str]) -> dict[str, object]:
    for old in marks.iterdir():
        old.unlink()
    began = time.time()
    out = subprocess.run(argv, cwd=root, capture_output=True, text=True, env=env, check=False)
    wall = time.time() - began
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    processes = [json.loads(p.read_text()) for p in marks.iterdir()]
    # xdist's controller collects nothing: only its workers import the suite.
    workers = [p for p in processes if p["who"] != "main"] or processes
    imports: dict[str, int] = {}
    for process in workers:
        for name in process["imported"]:
            imports[name] = imports.get(name, 0) + 1
    return {
        "wall_s": round(wall, 2),
        "per_process": sorted(
            (
                {
                    "who": p["who"],
                    "startup_and_collection_s": round(p["collected"] - max(p["started"], began), 2),
                    "modules_imported": len(p["imported"]),
                }
                for p in workers
            ),
            key=lambda p: str(p["who"]),
        ),
        "module_imports": sum(imports.values()),
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modules", type=int, default=50)
    parser.add_argument("--import-seconds", type=float, default=0.3)
    parser.add_argument("--sleep", action="store_true", help="sleep at import, not a busy loop")
    parser.add_argument("--lanes", type=int, default=2)
    args = parser.parse_args()
    python = sys.executable
    n = str(args.lanes)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TESTFLEET_L"))}
    runs = {
        "serial pytest": ([python, "-m", "pytest", "-q"], {}),
        f"pytest -n {n} (xdist)": ([python, "-m", "pytest", "-q", "-n", n], {}),
        f"testfleet run -n {n}": ([python, "-m", "testfleet", "run", "-n", n], {}),
        f"testfleet run -n {n}, every lane collects all": (
            [python, "-m", "testfleet", "run", "-n", n],
            {"TESTFLEET_SHARED_COLLECTION": "0"},
        ),
    }
    rows: dict[str, dict[str, object]] = {}
    load_before = load()
    with tempfile.TemporaryDirectory() as folder:
        root, marks = Path(folder) / "suite", Path(folder) / "marks"
        root.mkdir()
        marks.mkdir()
        write_suite(root, marks, args.modules, args.import_seconds, args.sleep)
        # Warm: the modules' bytecode cached, and testfleet's durations measured, as they are
        # from the second run of a suite on.
        measure(root, marks, runs[f"testfleet run -n {n}"][0], base)
        for name, (argv, extra) in runs.items():
            rows[name] = measure(root, marks, argv, {**base, **extra})
    serial = float(rows["serial pytest"]["wall_s"])  # type: ignore[arg-type]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "modules": args.modules,
        "import_seconds": args.import_seconds,
        "import_work": "sleep" if args.sleep else "busy loop",
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load(),
        "rows": rows,
    }
    out = HERE / "results" / f"collection-{time.strftime('%Y-%m-%d-%H%M')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.modules} modules, {args.import_seconds} s import each ({result['import_work']}),"
        f" {TESTS} tests each; {os.cpu_count()} CPUs; load average before {load_before},"
        f" after {result['load_after']}\n"
    )
    print(
        "| command | wall (s) | serial / this | module imports | per lane: start-up + collection"
        " (s), modules imported |\n|---|---|---|---|---|"
    )
    for name, row in rows.items():
        wall = float(row["wall_s"])  # type: ignore[arg-type]
        lanes = "; ".join(
            f"{p['who']}: {p['startup_and_collection_s']} s, {p['modules_imported']}"
            for p in row["per_process"]  # type: ignore[attr-defined]
        )
        print(f"| {name} | {wall} | {serial / wall:.2f}x | {row['module_imports']} | {lanes} |")
    print(f"\nwritten to {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
