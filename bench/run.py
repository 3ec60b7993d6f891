"""testfleet against the tools people use today, on the same workload, in one run.

Contenders, for each N:
  serial    plain `pytest` against one stack started by `testfleet up` (stack already up)
  xdist     `pytest -n N` against that same shared stack (stack already up)
  split     pytest-split: N groups, each its own process with its own `testfleet up` stack,
            started in parallel by a small driver, JUnit merged by hand (stack start counted)
  cold      `testfleet run -n N` with no durations file (everything counted)
  warm      `testfleet run -n N` again, with the durations the cold run measured

Every wall time is also shown as a ratio to the ideal bound max(sum of test times / N, longest
test), computed from the serial run's measured durations; interference failures are the tests
that failed although every one of them passes alone (the serial run).

    python bench/run.py            # 300 tests, N = 1 2 4 8 (about 10 minutes)
    python bench/run.py --quick    # 120 tests, N = 2 4 (about 2 minutes)

Writes bench/results/<date>.json and docs/benchmarks.md; every figure comes from the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import junitparser
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_start import lane_provisioning, up_to_ready
from suite import generate

from testfleet.plan import ideal_bound

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable
HEADER = "| contender | N | wall (s) | ideal (s) | wall / ideal | failures of tests passing alone |"
GOALS = {"warm": 1.10, "cold": 1.25, "stack_ready_s": 1.0}


def junit_outcomes(*paths: Path) -> tuple[dict[str, float], set[str]]:
    """(test -> seconds, failed tests) from pytest JUnit files."""
    times: dict[str, float] = {}
    failed: set[str] = set()
    for path in paths:
        for suite in junitparser.JUnitXml.fromfile(str(path)):
            for case in suite:
                key = f"{case.classname}::{case.name}"
                times[key] = float(case.time or 0)
                if case.result and isinstance(
                    case.result[0], junitparser.Failure | junitparser.Error
                ):
                    failed.add(key)
    return times, failed


@contextlib.contextmanager
def stack_up(root: Path, dotenv: Path) -> Iterator[dict[str, str]]:
    """A `testfleet up` stack for as long as the block runs; yields its env."""
    process = subprocess.Popen(
        [PY, "-m", "testfleet", "up", "--dotenv", str(dotenv)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    env = dict(os.environ)
    assert process.stdout is not None
    try:
        for line in process.stdout:
            key, _, value = line.removeprefix("export ").strip().partition("=")
            env[key] = value.strip("'")
            if key == "TESTFLEET_SERVICES":
                break
        yield env
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def timed(argv: list[str], root: Path, env: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    subprocess.run(argv, cwd=root, env=env, capture_output=True, check=False)
    return time.perf_counter() - began


def pytest_argv(junit: Path, *extra: str) -> list[str]:
    return [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *extra]


def run_split(root: Path, lanes: int, durations: Path, out: Path) -> tuple[float, set[str]]:
    """The driver people write: N groups in parallel, each with its own stack."""
    began = time.perf_counter()
    with contextlib.ExitStack() as stacks:
        envs = [
            stacks.enter_context(stack_up(root, out / f"split-env-{g}"))
            for g in range(1, lanes + 1)
        ]
        groups = [
            subprocess.Popen(
                pytest_argv(
                    out / f"split-{g}.xml",
                    "--splits",
                    str(lanes),
                    "--group",
                    str(g),
                    "--durations-path",
                    str(durations),
                ),
                cwd=root,
                env=envs[g - 1],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for g in range(1, lanes + 1)
        ]
        for group in groups:
            group.wait()
    wall = time.perf_counter() - began
    _, failed = junit_outcomes(*(out / f"split-{g}.xml" for g in range(1, lanes + 1)))
    return wall, failed


def run_testfleet(root: Path, lanes: int, junit: Path) -> tuple[float, set[str]]:
    wall = timed([PY, "-m", "testfleet", "run", "-n", str(lanes), "--junit-xml", str(junit)], root)
    _, failed = junit_outcomes(junit)
    return wall, failed


def rss_per_lane(root: Path, lanes: int) -> float:
    """Resident memory of the whole stack (servers and their children) per lane, in MiB."""
    from testfleet.project import load_project
    from testfleet.runtime import Run
    from testfleet.stack import Stack, resolve_binaries

    project = load_project(root, environ={})
    with Run() as run:
        stack = Stack(project, run, resolve_binaries(project), lanes=lanes)
        try:
            stack.start()
            for lane in range(1, lanes + 1):
                stack.provision(lane)
            total = 0
            for line in (run.run_dir.path / "pids").read_text().splitlines():
                with contextlib.suppress(psutil.NoSuchProcess):
                    process = psutil.Process(int(line.split()[0]))
                    for member in [process, *process.children(recursive=True)]:
                        with contextlib.suppress(psutil.NoSuchProcess):
                            total += member.memory_info().rss
        finally:
            stack.stop()
    return total / lanes / 2**20


def overhead(rounds: int) -> dict[str, float]:
    """`testfleet run` against plain pytest on a tiny suite without services."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "pyproject.toml").write_text(
            "[project]\nname = 't'\nversion = '0'\n[tool.testfleet]\n"
        )
        (root / "test_tiny.py").write_text("".join(f"def test_{i}(): pass\n" for i in range(5)))
        plain = [
            timed([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider"], root) for _ in range(rounds)
        ]
        ours = [timed([PY, "-m", "testfleet", "run"], root) for _ in range(rounds)]
    return {
        "pytest_s": round(statistics.median(plain), 3),
        "testfleet_s": round(statistics.median(ours), 3),
    }


def machine() -> str:
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores,"
        f" {memory:.0f} GiB, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tests", type=int)
    parser.add_argument("--lanes", type=int, nargs="+")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--render", type=Path, help="only rewrite docs/benchmarks.md from a results file"
    )
    args = parser.parse_args()
    if args.render:
        data = json.loads(args.render.read_text())
        (REPO / "docs" / "benchmarks.md").write_text(render(data, quick=data.get("quick", False)))
        return
    tests = args.tests or (120 if args.quick else 300)
    lane_counts = args.lanes or ([2, 4] if args.quick else [1, 2, 4, 8])
    with tempfile.TemporaryDirectory() as folder:
        root, out = Path(folder) / "suite", Path(folder) / "out"
        out.mkdir()
        generate(root, tests=tests, seed=args.seed)
        print(f"workload: {tests} synthetic tests", flush=True)
        synthetic = compare(root, lane_counts, out)
        rss = rss_per_lane(root, 4)
    with tempfile.TemporaryDirectory() as folder:
        print("workload: the example project", flush=True)
        example_root = Path(folder) / "bookshop"
        shutil.copytree(
            REPO / "examples" / "bookshop",
            example_root,
            ignore=shutil.ignore_patterns(".testfleet", "__pycache__"),
        )
        (Path(folder) / "out").mkdir()
        example = compare(example_root, lane_counts, Path(folder) / "out")
    with tempfile.TemporaryDirectory() as folder:
        four = Path(folder)
        (four / "pyproject.toml").write_text(
            "[project]\nname='s'\nversion='0'\n[tool.testfleet.services.postgres]\n"
            "[tool.testfleet.services.valkey]\n[tool.testfleet.services.nats]\n"
            "[tool.testfleet.services.vault]\n"
        )
        up_to_ready(four)
        ready = [up_to_ready(four) for _ in range(3 if args.quick else 5)]
    lane_db = lane_provisioning("database", 6)[1:]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "seed": args.seed,
        "quick": args.quick,
        **synthetic,
        "example": example,
        "services": per_service(3 if args.quick else 5),
        "stack": {
            "up_to_env_s": round(statistics.median(w for w, _ in ready), 3),
            "four_services_ready_s": round(statistics.median(r for _, r in ready), 3),
            "postgres_lane_s": round(statistics.median(lane_db), 4),
            "rss_per_lane_mib": round(rss, 1),
        },
        "overhead": overhead(3 if args.quick else 5),
    }
    stamp = time.strftime("%Y-%m-%d")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render(result, quick=args.quick)
    (REPO / "docs" / "benchmarks.md").write_text(markdown)
    print(markdown)


def compare(root: Path, lane_counts: list[int], out: Path) -> dict[str, object]:
    """Every contender on one workload; rows with wall, ratio to ideal, interference."""
    with stack_up(root, out / "shared-env") as env:
        serial_wall = timed(pytest_argv(out / "serial.xml"), root, env)
        times, serial_failed = junit_outcomes(out / "serial.xml")
        xdist = {
            n: (
                timed(pytest_argv(out / f"xdist-{n}.xml", "-n", str(n)), root, env),
                junit_outcomes(out / f"xdist-{n}.xml")[1],
            )
            for n in lane_counts
        }
    durations = out / "split-durations.json"
    durations.write_text(json.dumps(split_durations(times)))
    rows: list[dict[str, object]] = [
        {
            "contender": "serial pytest, shared stack",
            "lanes": 1,
            "wall_s": serial_wall,
            "failed": len(serial_failed),
        }
    ]
    for n in lane_counts:
        print(f"  N = {n}", flush=True)
        split = run_split(root, n, durations, out) if n > 1 else None
        shutil.rmtree(root / ".testfleet", ignore_errors=True)
        cold = run_testfleet(root, n, out / f"cold-{n}.xml")
        warm = run_testfleet(root, n, out / f"warm-{n}.xml")
        measured = [
            ("pytest-xdist, shared stack", xdist[n]),
            ("pytest-split, a stack per group", split),
            ("testfleet cold", cold),
            ("testfleet warm", warm),
        ]
        for name, outcome in measured:
            if outcome is None:
                continue
            wall, failed = outcome
            rows.append(
                {
                    "contender": name,
                    "lanes": n,
                    "wall_s": wall,
                    "failed": len(failed - serial_failed),
                }
            )
    for row in rows:
        ideal = ideal_bound(list(times.values()), int(str(row["lanes"])))
        row["ideal_s"] = round(ideal, 2)
        row["ratio"] = round(float(str(row["wall_s"])) / ideal, 3)
        row["wall_s"] = round(float(str(row["wall_s"])), 2)
    return {
        "tests": len(times),
        "serial_failed_alone": len(serial_failed),
        "sum_of_test_times_s": round(sum(times.values()), 2),
        "longest_test_s": round(max(times.values()), 2),
        "rows": rows,
    }


def per_service(rounds: int) -> dict[str, dict[str, float]]:
    """Each service alone: start to ready for lane 1, and one more lane."""
    from testfleet.project import Project, validate
    from testfleet.runtime import Run
    from testfleet.stack import Stack, resolve_binaries

    figures = {}
    for kind in ("postgres", "valkey", "nats", "vault"):
        ready, more = [], []
        with tempfile.TemporaryDirectory() as folder:
            project = Project(Path(folder), validate({"services": {kind: {}}}))
            for _ in range(rounds + 1):  # the first round warms caches
                with Run() as run:
                    stack = Stack(project, run, resolve_binaries(project), lanes=2)
                    try:
                        began = time.perf_counter()
                        stack.start()
                        stack.provision(1)
                        middle = time.perf_counter()
                        stack.provision(2)
                        ready.append(middle - began)
                        more.append(time.perf_counter() - middle)
                    finally:
                        stack.stop()
        figures[kind] = {
            "ready_s": round(statistics.median(ready[1:]), 4),
            "one_more_lane_s": round(statistics.median(more[1:]), 4),
        }
    return figures


def split_durations(times: dict[str, float]) -> dict[str, float]:
    """JUnit's classname/name back to pytest node ids, for pytest-split's durations file."""
    out = {}
    for key, seconds in times.items():
        classname, name = key.split("::")
        out[classname.replace(".", "/") + ".py::" + name] = seconds
    return out


def render(result: dict[str, object], *, quick: bool) -> str:
    rows = result["rows"]
    assert isinstance(rows, list)
    stack = result["stack"]
    assert isinstance(stack, dict)
    example = result["example"]
    services = result["services"]
    assert isinstance(example, dict)
    assert isinstance(services, dict)
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python bench/run.py{' --quick' if quick else ''}` on"
        f" {result['date']}: {result['machine']}. Every figure below comes from that run"
        f" (`bench/results/`); rerun it to check them.",
        "",
        f"Workload: {result['tests']} synthetic integration tests (`bench/suite.py`, seed"
        f" {result['seed']}): PostgreSQL queries, Valkey calls, NATS publishes, waits that stand"
        f" for network latency and CPU work, lognormal durations with a few very slow tests,"
        f" and a share of tests that are correct alone but interfere on a shared service. Sum"
        f" of test times {result['sum_of_test_times_s']} s, longest"
        f" {result['longest_test_s']} s (serial run; {result['serial_failed_alone']} failed"
        f" alone).",
        "",
        "Ideal = max(sum of test times / N, longest test). For serial and xdist the shared"
        " stack was already up (its start is not counted); pytest-split groups start their"
        " own stacks (counted); testfleet is timed from the command to its exit, stack start"
        " and teardown included.",
        "",
        HEADER,
        "|---|---|---|---|---|---|",
    ]
    lines += table(rows)
    lines += [
        "",
        f"Workload: the example project (`examples/bookshop`, {example['tests']} tests;"
        f" PostgreSQL, Valkey, NATS, Vault and its own API as a command service). Sum of test"
        f" times {example['sum_of_test_times_s']} s, longest {example['longest_test_s']} s:"
        " a suite this short is dominated by start-up, which is what this table shows.",
        "",
        HEADER,
        "|---|---|---|---|---|---|",
    ]
    lines += table(example["rows"])
    lines += [
        "",
        "## Services, each alone",
        "",
        "| service | start to ready, lane 1 (s) | one more lane (s) |",
        "|---|---|---|",
    ]
    for kind, figures in services.items():
        lines.append(f"| {kind} | {figures['ready_s']} | {figures['one_more_lane_s']} |")
    overhead = result["overhead"]
    assert isinstance(overhead, dict)
    lines += [
        "",
        "## Stack",
        "",
        "| figure | value |",
        "|---|---|",
        f"| PostgreSQL + Valkey + NATS + Vault: `testfleet up` launch to env printed |"
        f" {stack['up_to_env_s']} s |",
        f"| the same four services: start to ready | {stack['four_services_ready_s']} s |",
        f"| one more isolated PostgreSQL lane (database clone) | {stack['postgres_lane_s']} s |",
        f"| memory (RSS) of the workload's stack per lane, 4 lanes | {stack['rss_per_lane_mib']}"
        " MiB |",
        f"| tiny suite, no services: plain `pytest` | {overhead['pytest_s']} s |",
        f"| tiny suite, no services: `testfleet run` | {overhead['testfleet_s']} s |",
        "",
        "## Goals",
        "",
        "| goal | result |",
        "|---|---|",
    ]
    lines += goal_lines(rows, stack)
    lines += [
        "",
        "## Reading these numbers",
        "",
        f"The ideal bound assumes N lanes run N-wide. This machine has {os.cpu_count()} cores:"
        " beyond that, lanes share cores, so the CPU work inside tests and each lane's"
        " start-up (an interpreter, the suite's imports and its collection, which testfleet's"
        " summary prints per lane) cannot overlap as the bound assumes. Waiting (on services,"
        " on the network) still overlaps, which is why more lanes than cores still help an"
        " integration suite. pytest-xdist pays the same start-up per worker; its wall time here"
        " also leaves out the start of the shared stack it runs against, which testfleet's"
        " includes.",
    ]
    return "\n".join(lines) + "\n"


def table(rows: list[dict[str, object]]) -> list[str]:
    return [
        f"| {row['contender']} | {row['lanes']} | {row['wall_s']} | {row['ideal_s']} |"
        f" {row['ratio']} | {row['failed']} |"
        for row in rows
    ]


def goal_lines(rows: list[dict[str, object]], stack: dict[str, object]) -> list[str]:
    def of(name: str) -> dict[int, dict[str, object]]:
        return {int(str(r["lanes"])): r for r in rows if r["contender"] == name}

    warm, cold, xdist = of("testfleet warm"), of("testfleet cold"), of("pytest-xdist, shared stack")
    out = []
    for label, runs, limit in (
        ("warm within 1.10x of ideal", warm, GOALS["warm"]),
        ("cold within 1.25x of ideal", cold, GOALS["cold"]),
    ):
        for n, row in sorted(runs.items()):
            ratio = float(str(row["ratio"]))
            out.append(f"| {label}, N={n} | {ratio}x: {'met' if ratio <= limit else 'missed'} |")
    for n, row in sorted(warm.items()):
        theirs = xdist.get(n)
        if theirs is None:
            continue
        faster = float(str(row["wall_s"])) < float(str(theirs["wall_s"]))
        clean = row["failed"] == 0
        out.append(
            f"| faster than xdist at N={n}, zero interference failures |"
            f" {row['wall_s']} s vs {theirs['wall_s']} s, {row['failed']} failures:"
            f" {'met' if faster and clean else 'missed'} |"
        )
    ready = float(str(stack["four_services_ready_s"]))
    out.append(
        f"| four-service stack ready in under 1 s | {ready} s:"
        f" {'met' if ready < GOALS['stack_ready_s'] else 'missed'} |"
    )
    return out


if __name__ == "__main__":
    main()
