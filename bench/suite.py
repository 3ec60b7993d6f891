"""A synthetic integration suite that looks like a real one, seeded so a run is repeatable.

Test durations follow a lognormal distribution with a few very slow tests. Each test does one
kind of work: real PostgreSQL queries, Valkey calls, NATS publishes, waits that stand for
network latency, or CPU work. Module-scoped fixtures create a table per module; session
fixtures hold the connections. A share of the tests is correct alone but interferes on a
shared service (row counts after TRUNCATE, FLUSHDB then DBSIZE, a fixed stream's count).

    python bench/suite.py DIR [--tests 300] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

PYPROJECT = """[project]
name = "synthetic-suite"
version = "0"

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.testfleet]
pytest-args = ["-q", "-p", "no:cacheprovider"]

[tool.testfleet.services.postgres]
setup = "python setup_db.py"

[tool.testfleet.services.valkey]
[tool.testfleet.services.nats]
"""

SETUP_DB = """import os, psycopg
with psycopg.connect(os.environ["POSTGRES_URL"], autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS events (id serial PRIMARY KEY, kind text)")
    conn.execute("CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, payload text)")
"""

CONFTEST = """import asyncio, os
import nats, psycopg, pytest, redis


@pytest.fixture(scope="session")
def pg():
    with psycopg.connect(os.environ["POSTGRES_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def cache():
    client = redis.Redis.from_url(os.environ["VALKEY_URL"])
    yield client
    client.close()


@pytest.fixture(scope="module")
def module_table(pg, request):
    name = "t_" + request.module.__name__.rsplit(".", 1)[-1]
    pg.execute(f"CREATE TABLE IF NOT EXISTS {name} (id serial PRIMARY KEY, v int)")
    return name


def publish(subject, count, stream=None):
    async def go():
        nc = await nats.connect(os.environ["NATS_URL"])
        js = nc.jetstream()
        if stream:
            await js.add_stream(name=stream, subjects=[subject])
            await js.purge_stream(stream)
        for i in range(count):
            await js.publish(subject, str(i).encode()) if stream else await nc.publish(
                subject, b"x")
        size = (await js.stream_info(stream)).state.messages if stream else count
        await nc.close()
        return size
    return asyncio.run(go())
"""

BODIES = {
    "io": "    time.sleep({d})\n",
    "pg": (
        "    pg.execute(\n"
        '        f"INSERT INTO {{module_table}} (v) SELECT g FROM generate_series(1, 50) g")\n'
        '    pg.execute("SELECT pg_sleep(%s)", ({half},))\n'
        '    assert pg.execute(f"SELECT count(*) FROM {{module_table}}").fetchone()[0] >= 50\n'
        "    time.sleep({half})\n"
    ),
    "valkey": (
        "    for i in range(20):\n"
        '        cache.set(f"{{__name__}}:{{i}}", i)\n'
        '    assert cache.get(f"{{__name__}}:3") == b"3"\n'
        "    time.sleep({d})\n"
    ),
    "nats": '    assert publish("bench.events", 10) == 10\n    time.sleep({d})\n',
    "cpu": (
        "    end = time.perf_counter() + {d}\n"
        "    n = 0\n"
        "    while time.perf_counter() < end:\n"
        "        n += sum(i * i for i in range(200))\n"
        "    assert n > 0\n"
    ),
    # Correct alone; wrong when another process uses the same service at the same time.
    "shared_rows": (
        '    pg.execute("TRUNCATE events")\n'
        '    for kind in ("a", "b", "c"):\n'
        '        pg.execute("INSERT INTO events (kind) VALUES (%s)", (kind,))\n'
        "    time.sleep({d})\n"
        '    assert pg.execute("SELECT count(*) FROM events").fetchone()[0] == 3\n'
    ),
    "shared_keys": (
        "    cache.flushdb()\n"
        '    cache.set("a", 1); cache.set("b", 2); cache.set("c", 3)\n'
        "    time.sleep({d})\n"
        "    assert cache.dbsize() == 3\n"
    ),
    "shared_stream": (
        '    time.sleep({d})\n    assert publish("orders.x", 3, stream="ORDERS") == 3\n'
    ),
}
FIXTURES = {
    "io": "",
    "pg": "pg, module_table",
    "valkey": "cache",
    "nats": "",
    "cpu": "",
    "shared_rows": "pg",
    "shared_keys": "cache",
    "shared_stream": "",
}
KINDS = ["io", "pg", "valkey", "nats", "cpu"]
WEIGHTS = [0.35, 0.25, 0.15, 0.1, 0.15]
SHARED = ["shared_rows", "shared_keys", "shared_stream"]


def generate(
    root: Path,
    *,
    tests: int = 300,
    seed: int = 1,
    per_module: int = 10,
    shared_share: float = 0.12,
    slow: int = 3,
) -> dict[str, float]:
    """Write the suite into `root`; returns each test's planned duration."""
    rng = random.Random(seed)
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "setup_db.py").write_text(SETUP_DB)
    (root / "tests" / "conftest.py").write_text(CONFTEST)
    planned: dict[str, float] = {}
    slow_ids = set(rng.sample(range(tests), slow))
    for start in range(0, tests, per_module):
        module = f"test_m{start // per_module:03d}"
        lines = ["import time\n", "from tests.conftest import publish\n"]
        for index in range(start, min(start + per_module, tests)):
            seconds = round(min(rng.lognormvariate(-2.6, 0.9), 1.5), 3)
            if index in slow_ids:
                seconds = round(rng.uniform(2.0, 3.0), 3)
            kind = rng.choices(KINDS, WEIGHTS)[0]
            if rng.random() < shared_share:
                kind = rng.choice(SHARED)
                seconds = max(seconds, 0.15)  # long enough to overlap another lane
            name = f"test_{index:04d}_{kind}"
            body = BODIES[kind].format(d=seconds, half=round(seconds / 2, 3))
            lines.append(f"\ndef {name}({FIXTURES[kind]}):\n{body}")
            planned[f"tests/{module}.py::{name}"] = seconds
        (root / "tests" / f"{module}.py").write_text("".join(lines))
    (root / "tests" / "__init__.py").write_text("")
    (root / "planned.json").write_text(json.dumps(planned, indent=1))
    return planned


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    planned = generate(args.dir, tests=args.tests, seed=args.seed)
    print(
        f"{len(planned)} tests, planned total {sum(planned.values()):.1f} s, written to {args.dir}"
    )


if __name__ == "__main__":
    main()
