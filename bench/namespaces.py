"""The cost of a network namespace per lane, measured on this machine in one run: one more
lane's services (Valkey, PostgreSQL with a server per lane, NATS) on the shared network and
in the lane's own namespace, and the namespace alone.

    python bench/namespaces.py [--lanes N] [--rounds N]

Prints a Markdown table and writes bench/results/namespaces-<date>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testfleet.project import Project, validate
from testfleet.runtime import Run
from testfleet.stack import Stack, resolve_binaries

HERE = Path(__file__).resolve().parent
SERVICES = {
    "valkey": {"valkey": {}},
    "postgres (server per lane)": {"postgres": {"isolation": "server"}},
    "nats": {"nats": {}},
}


def per_lane(services: dict[str, Any], network: str, lanes: int, root: Path) -> list[float]:
    """Seconds to provision each lane after the first (the cost of one more lane)."""
    project = Project(root, validate({"network": network, "services": services}))
    with Run() as run:
        stack = Stack(project, run, resolve_binaries(project), lanes=lanes)
        try:
            stack.start()
            stack.provision(1)
            times = []
            for lane in range(2, lanes + 1):
                began = time.perf_counter()
                stack.provision(lane)
                times.append(time.perf_counter() - began)
        finally:
            stack.stop()
    return times


def namespace_alone(rounds: int, root: Path) -> list[float]:
    from testfleet.netns import start_namespace

    times = []
    with Run() as run:
        for n in range(rounds):
            folder = root / f"ns{n}"
            folder.mkdir()
            began = time.perf_counter()
            start_namespace(run.supervisor, folder, n).close()
            times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lanes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("bench_run", HERE / "run.py")
    assert spec is not None
    assert spec.loader is not None
    bench_run = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = bench_run
    spec.loader.exec_module(bench_run)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for label, services in SERVICES.items():
            for network in ("shared", "namespace"):
                samples = [
                    t
                    for _ in range(args.rounds)
                    for t in per_lane(services, network, args.lanes, root)
                ]
                rows.setdefault(label, {})[network] = statistics.median(samples)
        alone = statistics.median(namespace_alone(args.rounds * 5, root))
    lines = [
        f"Machine: {bench_run.machine()}; median over {args.rounds} rounds of lanes 2-"
        f"{args.lanes}.",
        "",
        "| services | one more lane, shared network | in its own namespace"
        " | cost of the namespace |",
        "|---|---|---|---|",
    ]
    for label, by_network in rows.items():
        shared, spaced = by_network["shared"], by_network["namespace"]
        lines.append(
            f"| {label} | {shared * 1000:.1f} ms | {spaced * 1000:.1f} ms"
            f" | {(spaced - shared) * 1000:+.1f} ms |"
        )
    lines += ["", f"A namespace alone (holder started, loopback up): {alone * 1000:.1f} ms."]
    print("\n".join(lines))
    out = HERE / "results" / f"namespaces-{time.strftime('%Y%m%d')}.json"
    out.write_text(json.dumps({"rows": rows, "namespace_alone": alone}, indent=2))


if __name__ == "__main__":
    main()
