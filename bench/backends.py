"""Native processes against Docker containers, measured in one run on this machine: for each
of postgres, valkey, nats and vault, the stack's start and one more isolated lane.

    python bench/backends.py [--rounds N]

Needs a Docker engine and the local images of `testfleet images build` (built when missing).
Prints a Markdown table with docker/native ratios and writes bench/results/backends-<date>.json.
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

from testfleet.images.build import build_images
from testfleet.project import Project, validate
from testfleet.runtime import Run
from testfleet.stack import Stack, resolve_binaries

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KINDS = {"postgres": "postgres", "valkey": "valkey", "nats": "nats", "vault": "openbao"}


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def measure(kind: str, backend: str, image: str, root: Path) -> tuple[float, float, float]:
    """(stack start, lane 1, one more lane) in seconds, for one service on one backend
    ("docker+reuse": containers kept from the previous round, emptied before use)."""
    service: dict[str, Any] = {"backend": backend.split("+", maxsplit=1)[0]}
    if backend.startswith("docker"):
        service["image"] = image
    if backend == "docker+reuse":
        service["reuse"] = True
    project = Project(root, validate({"services": {kind: service}}))
    with Run() as run:
        stack = Stack(project, run, resolve_binaries(project), lanes=2)
        try:
            began = time.perf_counter()
            stack.start()
            started = time.perf_counter()
            stack.provision(1)
            first = time.perf_counter()
            stack.provision(2)
            second = time.perf_counter()
        finally:
            stack.stop()
    return started - began, first - started, second - first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    images = build_images(list(KINDS.values()))
    machine = _module(HERE / "run.py", "bench_run").machine()
    rows: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind, image_kind in KINDS.items():
            reusable = kind in ("postgres", "valkey")
            for backend in ("native", "docker", *(["docker+reuse"] if reusable else [])):
                # Alternate rounds would mix page-cache effects; a warm-up round is dropped.
                measure(kind, backend, images[image_kind], Path(folder))
                samples = [
                    measure(kind, backend, images[image_kind], Path(folder))
                    for _ in range(args.rounds)
                ]
                rows.setdefault(kind, {})[backend] = [
                    statistics.median(s[i] for s in samples) for i in range(3)
                ]
    from testfleet.backends.docker_engine import prune_reused

    prune_reused()
    lines = [
        f"Machine: {machine}; median of {args.rounds} rounds after one warm-up.",
        "",
        "| service | native: start + lane 1 | docker: start + lane 1 | ratio"
        " | native: one more lane | docker: one more lane | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, by_backend in rows.items():
        native, docker = by_backend["native"], by_backend["docker"]
        first_native, first_docker = native[0] + native[1], docker[0] + docker[1]
        lines.append(
            f"| {kind} | {first_native:.2f} s | {first_docker:.2f} s"
            f" | {first_docker / first_native:.1f}x | {native[2]:.3f} s | {docker[2]:.3f} s"
            f" | {docker[2] / native[2]:.1f}x |"
        )
    lines += [
        "",
        "| service | docker: start + lane 1 | docker, reused: start + lane 1 | ratio |",
        "|---|---|---|---|",
    ]
    for kind, by_backend in rows.items():
        if "docker+reuse" in by_backend:
            fresh = by_backend["docker"][0] + by_backend["docker"][1]
            kept = by_backend["docker+reuse"][0] + by_backend["docker+reuse"][1]
            lines.append(f"| {kind} | {fresh:.2f} s | {kept:.2f} s | {fresh / kept:.1f}x faster |")
    print("\n".join(lines))
    out = HERE / "results" / f"backends-{time.strftime('%Y%m%d')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rounds": args.rounds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
