"""Stack start-up figures, measured on this machine:

1. `testfleet up` to ready for postgres + valkey + nats + vault (warm caches): wall time from
   launching the command to its env being printed, and the stack's own "ready in" figure;
2. provisioning one more isolated PostgreSQL lane (database clone, and server copy);
3. the process count before, during and after a `testfleet run` interrupted with Ctrl-C.

    python bench/stack_start.py [--rounds N]

Prints a Markdown table and writes bench/results/stack_start-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testfleet.project import Project, validate
from testfleet.runtime import Run
from testfleet.stack import Stack, resolve_binaries

HERE = Path(__file__).resolve().parent
STACK = """[project]
name = "bench"
version = "0"

[tool.testfleet.services.postgres]
[tool.testfleet.services.valkey]
[tool.testfleet.services.nats]
[tool.testfleet.services.vault]
"""


def up_to_ready(project: Path) -> tuple[float, float]:
    """(wall seconds from exec to the env printed, the stack's own 'ready in' seconds)."""
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "testfleet", "up"],
        cwd=project,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    assert process.stdout is not None
    ready = 0.0
    for line in process.stderr:
        found = re.search(r"stack ready in ([\d.]+) s", line)
        if found:
            ready = float(found.group(1))
        if "Ctrl-C stops the stack" in line:
            break
    wall = time.perf_counter() - began
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    return wall, ready


def lane_provisioning(isolation: str, lanes: int) -> list[float]:
    with tempfile.TemporaryDirectory() as root:
        project = Project(
            Path(root), validate({"services": {"postgres": {"isolation": isolation}}})
        )
        with Run() as run:
            stack = Stack(project, run, resolve_binaries(project), lanes=lanes)
            try:
                stack.start()
                times = []
                for lane in range(1, lanes + 1):
                    began = time.perf_counter()
                    stack.provision(lane)
                    times.append(time.perf_counter() - began)
                return times
            finally:
                stack.stop()


def process_count() -> int:
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit())


def interrupted_run(project: Path) -> dict[str, int]:
    (project / "test_slow.py").write_text("import time\ndef test_slow():\n    time.sleep(60)\n")
    before = process_count()
    process = subprocess.Popen(
        [sys.executable, "-m", "testfleet", "run", "--", "-p", "no:cacheprovider", "-s"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "stack ready in" in line:
            break
    time.sleep(1.0)  # let pytest start its test: we interrupt a run in progress
    during = process_count()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    after = process_count()
    (project / "test_slow.py").unlink()
    return {"before": before, "during": during, "after": after, "exit_code": process.returncode}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        project = Path(root)
        (project / "pyproject.toml").write_text(STACK)
        up_to_ready(project)  # warm: initdb cache, page cache
        rounds = [up_to_ready(project) for _ in range(args.rounds)]
        interrupted = interrupted_run(project)
    db_lanes = lane_provisioning("database", 9)[1:]
    server_lanes = lane_provisioning("server", 5)[1:]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": (
            f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "up_wall_s": [round(w, 3) for w, _ in rounds],
        "up_ready_s": [round(r, 3) for _, r in rounds],
        "postgres_lane_database_s": [round(t, 4) for t in db_lanes],
        "postgres_lane_server_s": [round(t, 4) for t in server_lanes],
        "interrupted_run_processes": interrupted,
    }
    out = HERE / "results" / f"stack_start-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    med = statistics.median
    print(f"machine: {result['machine']}\n")
    print("| figure | median | min | max |\n|---|---|---|---|")
    for label, values in (
        ("`testfleet up` exec to env printed, 4 services (s)", result["up_wall_s"]),
        ("stack start to ready, 4 services (s)", result["up_ready_s"]),
        ("one more PostgreSQL lane, database clone (s)", result["postgres_lane_database_s"]),
        ("one more PostgreSQL lane, own server (s)", result["postgres_lane_server_s"]),
    ):
        print(f"| {label} | {med(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
    print(
        f"\nprocesses before / during / after an interrupted run: {interrupted['before']} /"
        f" {interrupted['during']} / {interrupted['after']} (exit code {interrupted['exit_code']})"
    )
    print(f"\nwritten to {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
