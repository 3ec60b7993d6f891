"""The edit-test loop: what one more `testfleet run` costs while a developer works.

Measured in one invocation, the contenders of each part alternating round by round (their order
rotating too) so drift hits them alike, one unmeasured warm-up round first, medians reported:

1. a tiny suite with services (5 tests, PostgreSQL and Valkey): plain `pytest` with the env of
   a running `testfleet up`, against `testfleet run -n 1` with its own stack (cold) and
   `testfleet run -n 1` on that up's stack (reused);
2. the same three on one file of the example project (`tests/test_cache.py`, then
   `tests/test_catalog.py`);
3. early lanes (interpreters started while the services start) against lanes started after
   the stack is ready (`TESTFLEET_EARLY_LANES=0`): the example project, `-n 4`, own stack;
4. the synthetic suite (`bench/suite.py`, 120 tests) at N = 2 and 4: own stack with early lanes
   off and on, and a run reusing a running `testfleet up -n N`.

    python bench/loop.py            # 7 rounds, 3 for the synthetic suite (about 10 minutes)
    python bench/loop.py --quick    # 3 rounds, 1 for the synthetic suite

Writes bench/results/loop-<date>.json, the "edit-test loop" section of docs/benchmarks.md and
its rows of the Goals table there; every figure comes from the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from run import machine  # noqa: E402
from suite import generate  # noqa: E402

from testfleet.up.dotenv import read_dotenv  # noqa: E402

PY = sys.executable
BEGIN, END = "<!-- loop -->", "<!-- /loop -->"
USING = "testfleet: using the stack of the running `testfleet up`"
GOAL_S = 0.30  # reused run minus plain pytest
SYNTHETIC_TESTS = 120  # bench/run.py --quick's size: about 17 s serially
EXAMPLE_FILES = ("tests/test_cache.py", "tests/test_catalog.py")
GOAL_TINY = "`testfleet run` with a running `up` within 0.3 s of plain pytest (tiny suite)"
GOAL_FILE = (
    "`testfleet run` with a running `up` within 0.3 s of plain pytest (one file of the example)"
)
GOAL_EARLY = "first test result at -n 4 sooner with early lanes"

TINY_CONFIG = """[project]
name = "loop-tiny"
version = "0"

[tool.testfleet]
pytest-args = ["-q"]

[tool.testfleet.services.postgres]
[tool.testfleet.services.valkey]
"""
TINY_TESTS = """import os

import psycopg
import redis


def test_postgres():
    with psycopg.connect(os.environ["POSTGRES_URL"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_valkey():
    client = redis.Redis.from_url(os.environ["VALKEY_URL"])
    assert client.ping()
    client.close()


def test_sum():
    assert sum(range(10)) == 45


def test_upper():
    assert "loop".upper() == "LOOP"


def test_sorted():
    assert sorted([3, 1, 2]) == [1, 2, 3]
"""

FIRST_RESULT = re.compile(r"first test result ([\d.]+) s after the command started")
LANE_LINE = re.compile(r"^lane \d+: \d+ tests, .*\(start-up and collection ([\d.]+) s\)", re.M)
PASSED = re.compile(r"(\d+) passed")


@dataclass
class Outcome:
    wall_s: float
    tests: int
    first_result_s: float | None = None
    lane_startup_s: list[float] = field(default_factory=list)


def base_env() -> dict[str, str]:
    """This shell's env without TESTFLEET_* settings, which would change what is measured."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TESTFLEET_")}


def copy_example(dest: Path) -> Path:
    shutil.copytree(
        REPO / "examples" / "bookshop",
        dest,
        ignore=shutil.ignore_patterns(".testfleet", "__pycache__", ".pytest_cache"),
    )
    return dest


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a developer stops it; SIGKILL the group only if it does not end."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def command(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str, str]:
    """(wall seconds, stdout, stderr) of a command that must pass."""
    began = time.perf_counter()
    # Its own session, so a hung run can be stopped with everything it started.
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=600)
        wall = time.perf_counter() - began
    finally:
        stop(process)
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(
            f"{shlex.join(argv)} in {cwd} exited {process.returncode}:\n{stdout[-2000:]}"
            f"\n{stderr[-3000:]}"
        )
    return wall, stdout, stderr


@contextlib.contextmanager
def running_up(project: Path, lanes: int) -> Iterator[dict[str, str]]:
    """A running `testfleet up -n lanes`; yields the env a developer gets from its dotenv."""
    log = project.parent / f"{project.name}-up-{lanes}.stderr"
    with log.open("wb") as sink:
        # stderr to a file, not a pipe nobody reads: a full pipe would stall the up.
        process = subprocess.Popen(
            [PY, "-m", "testfleet", "up", "-n", str(lanes)],
            cwd=project,
            env=base_env(),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops the stack" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"testfleet up did not get ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield {**base_env(), **read_dotenv(project / ".testfleet" / "env")}
    finally:
        stop(process)


def plain_pytest(project: Path, env: dict[str, str], *paths: str) -> Outcome:
    wall, stdout, _ = command([PY, "-m", "pytest", "-q", *paths], project, env)
    return Outcome(wall, passed(stdout))


def run_testfleet(
    project: Path, lanes: int, *, own_stack: bool, early: bool = True, paths: tuple[str, ...] = ()
) -> Outcome:
    env = base_env()
    if not early:
        env["TESTFLEET_EARLY_LANES"] = "0"
    argv = [PY, "-m", "testfleet", "run", "-n", str(lanes)]
    argv += ["--own-stack"] if own_stack else []
    argv += ["--", *paths] if paths else []
    wall, _, stderr = command(argv, project, env)
    used_up = stderr.startswith(USING)
    if used_up == own_stack:
        first = stderr.splitlines()[0] if stderr else "(no stderr)"
        expected = "its own stack" if own_stack else "the running `testfleet up`"
        raise SystemExit(f"{shlex.join(argv)} should have used {expected}; it said: {first}")
    found = FIRST_RESULT.search(stderr)
    startup = [float(s) for s in LANE_LINE.findall(stderr)]
    if found is None or not startup:
        raise SystemExit(f"{shlex.join(argv)}: no end-of-run summary:\n{stderr[-3000:]}")
    return Outcome(wall, passed(stderr), float(found.group(1)), startup)


def passed(output: str) -> int:
    counts = PASSED.findall(output)
    if not counts:
        raise SystemExit(f"no 'N passed' in:\n{output[-2000:]}")
    return int(counts[-1])


def alternate(
    label: str, contenders: dict[str, Callable[[], Outcome]], rounds: int
) -> dict[str, list[Outcome]]:
    """Every contender once per round, the order rotating; round 0 is a warm-up (bytecode,
    page cache, the durations file) and is not kept."""
    names = list(contenders)
    kept: dict[str, list[Outcome]] = {name: [] for name in names}
    for index in range(rounds + 1):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            outcome = contenders[name]()
            if index:
                kept[name].append(outcome)
        print(f"  {label}: round {index}/{rounds}{' (warm-up)' if not index else ''}", flush=True)
    return kept


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summary(outcomes: list[Outcome]) -> dict[str, object]:
    figures: dict[str, object] = {
        "tests": outcomes[0].tests,
        "wall_s": med([o.wall_s for o in outcomes]),
        "rounds": [asdict(o) for o in outcomes],
    }
    if outcomes[0].first_result_s is not None:
        figures["first_result_s"] = med([o.first_result_s or 0.0 for o in outcomes])
        # Every lane of every round, pooled: one figure per lane start.
        figures["lane_startup_s"] = med([s for o in outcomes for s in o.lane_startup_s])
    return figures


def edit_loop(
    label: str, project: Path, rounds: int, paths: tuple[str, ...] = ()
) -> dict[str, object]:
    """Plain pytest, a cold run and a reused run of `paths`, with one `up -n 1` running all
    along (the cold run ignores it, as a developer's `--own-stack` run would)."""
    with running_up(project, 1) as env:
        runs = alternate(
            label,
            {
                "plain": lambda: plain_pytest(project, env, *paths),
                "cold": lambda: run_testfleet(project, 1, own_stack=True, paths=paths),
                "reused": lambda: run_testfleet(project, 1, own_stack=False, paths=paths),
            },
            rounds,
        )
    result = {name: summary(outcomes) for name, outcomes in runs.items()}
    plain, reused = result["plain"]["wall_s"], result["reused"]["wall_s"]
    assert isinstance(plain, float)
    assert isinstance(reused, float)
    return {**result, "reused_minus_plain_s": round(reused - plain, 3)}


def early_lanes(project: Path, rounds: int, lanes: int) -> dict[str, object]:
    runs = alternate(
        f"early lanes, -n {lanes}",
        {
            "off": lambda: run_testfleet(project, lanes, own_stack=True, early=False),
            "on": lambda: run_testfleet(project, lanes, own_stack=True, early=True),
        },
        rounds,
    )
    return {name: summary(outcomes) for name, outcomes in runs.items()}


def synthetic(project: Path, rounds: int, lanes: int) -> dict[str, object]:
    with running_up(project, lanes):
        runs = alternate(
            f"synthetic suite, N = {lanes}",
            {
                "own_early_off": lambda: run_testfleet(project, lanes, own_stack=True, early=False),
                "own_early_on": lambda: run_testfleet(project, lanes, own_stack=True),
                "reused": lambda: run_testfleet(project, lanes, own_stack=False),
            },
            rounds,
        )
    return {name: summary(outcomes) for name, outcomes in runs.items()}


def measure(rounds: int, synthetic_rounds: int) -> dict[str, object]:
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="loop-") as folder:
        tiny = Path(folder) / "tiny"
        tiny.mkdir()
        (tiny / "pyproject.toml").write_text(TINY_CONFIG)
        (tiny / "test_tiny.py").write_text(TINY_TESTS)
        result["tiny"] = edit_loop("tiny suite", tiny, rounds)
    with tempfile.TemporaryDirectory(prefix="loop-") as folder:
        example = copy_example(Path(folder) / "bookshop")
        result["files"] = {
            path: edit_loop(path, example, rounds, (path,)) for path in EXAMPLE_FILES
        }
    with tempfile.TemporaryDirectory(prefix="loop-") as folder:
        example = copy_example(Path(folder) / "bookshop")
        result["early_lanes"] = {"lanes": 4, **early_lanes(example, rounds, 4)}
    with tempfile.TemporaryDirectory(prefix="loop-") as folder:
        suite = Path(folder) / "suite"
        generate(suite, tests=SYNTHETIC_TESTS, seed=1)
        result["synthetic"] = {
            "tests": SYNTHETIC_TESTS,
            "rounds": synthetic_rounds,
            **{f"N={n}": synthetic(suite, synthetic_rounds, n) for n in (2, 4)},
        }
    return result


def goals(result: dict[str, object]) -> list[tuple[str, str]]:
    tiny, files, early = result["tiny"], result["files"], result["early_lanes"]
    assert isinstance(tiny, dict)
    assert isinstance(files, dict)
    assert isinstance(early, dict)
    tiny_diff = float(tiny["reused_minus_plain_s"])
    file_diffs = {path: float(f["reused_minus_plain_s"]) for path, f in files.items()}
    off, on = float(early["off"]["first_result_s"]), float(early["on"]["first_result_s"])

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    return [
        (GOAL_TINY, f"{tiny_diff:+.2f} s: {verdict(tiny_diff <= GOAL_S)}"),
        (
            GOAL_FILE,
            ", ".join(f"`{Path(p).name}` {d:+.2f} s" for p, d in file_diffs.items())
            + f": {verdict(max(file_diffs.values()) <= GOAL_S)}",
        ),
        (GOAL_EARLY, f"{on} s with, {off} s without: {verdict(on < off)}"),
    ]


def render(result: dict[str, object]) -> str:
    tiny, files, early, synth = (
        result["tiny"],
        result["files"],
        result["early_lanes"],
        result["synthetic"],
    )
    assert isinstance(tiny, dict)
    assert isinstance(files, dict)
    assert isinstance(early, dict)
    assert isinstance(synth, dict)
    lines = [
        BEGIN,
        "## The edit-test loop (`bench/loop.py`)",
        "",
        f"Measured {result['when']} with `{result['command']}` on {result['machine']}; the"
        f" whole benchmark took {float(str(result['took_s'])) / 60:.1f} min. Each part"
        " alternates its contenders round by round (the order rotating), after one unmeasured"
        " warm-up round;"
        f" figures are medians of {result['rounds']} rounds ({synth['rounds']} for the"
        " synthetic suite), wall time from the command's start to its exit. testfleet's"
        " bytecode is compiled first, as installing it with pip does (this checkout is an"
        " editable install on a machine that sets PYTHONDONTWRITEBYTECODE=1).",
        "",
        "**One more run while you work**: plain `pytest -q` with the env of a running"
        " `testfleet up` (its `.testfleet/env`), against `testfleet run -n 1` starting its own"
        " stack (`--own-stack`) and `testfleet run -n 1` using that up's stack. The up ran"
        " (idle) during the own-stack runs too.",
        "",
        "| workload | tests | plain pytest (s) | `run`, own stack (s) | `run`, up reused (s) |"
        " reused minus plain (s) | first result, own / reused (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    workloads = [("tiny suite: PostgreSQL, Valkey, 5 tests", tiny)]
    workloads += [(f"example, `{path}`", figures) for path, figures in files.items()]
    for name, figures in workloads:
        plain, cold, reused = figures["plain"], figures["cold"], figures["reused"]
        lines.append(
            f"| {name} | {plain['tests']} | {plain['wall_s']} | {cold['wall_s']} |"
            f" {reused['wall_s']} | {figures['reused_minus_plain_s']:+.3f} |"
            f" {cold['first_result_s']} / {reused['first_result_s']} |"
        )
    off, on = early["off"], early["on"]
    lines += [
        "",
        f"**Early lanes**: the example project ({on['tests']} tests), `testfleet run -n"
        f" {early['lanes']} --own-stack`, lanes started while the services start (on) or"
        " after the stack is ready (`TESTFLEET_EARLY_LANES=0`). Start-up and collection is the"
        " run summary's per-lane figure, every lane of every round.",
        "",
        "| early lanes | first test result (s) | whole command (s) |"
        " lane start-up and collection (s) |",
        "|---|---|---|---|",
        f"| off | {off['first_result_s']} | {off['wall_s']} | {off['lane_startup_s']} |",
        f"| on | {on['first_result_s']} | {on['wall_s']} | {on['lane_startup_s']} |",
        f"| on minus off | {on['first_result_s'] - off['first_result_s']:+.3f} |"
        f" {on['wall_s'] - off['wall_s']:+.3f} |"
        f" {on['lane_startup_s'] - off['lane_startup_s']:+.3f} |",
        "",
        f"**The synthetic suite** (`bench/suite.py`, {synth['tests']} tests, seed 1): its own"
        " stack with early lanes off and on, and a run on a running `testfleet up -n N`.",
        "",
        "| N | contender | wall (s) | first test result (s) |",
        "|---|---|---|---|",
    ]
    names = {
        "own_early_off": "own stack, early lanes off",
        "own_early_on": "own stack, early lanes on",
        "reused": "`up -n N` reused",
    }
    for n in (2, 4):
        runs = synth[f"N={n}"]
        for key, name in names.items():
            lines.append(
                f"| {n} | {name} | {runs[key]['wall_s']} | {runs[key]['first_result_s']} |"
            )
    lines += ["", "| goal | result |", "|---|---|"]
    lines += [f"| {goal} | {outcome} |" for goal, outcome in goals(result)]
    lines.append(END)
    return "\n".join(lines)


def with_goal_rows(text: str, rows: list[tuple[str, str]], when: str) -> str:
    """The main Goals table with this benchmark's rows at its end: rows of an earlier run of
    this script are replaced, the others left as they are."""
    lines = text.split("\n")
    start = lines.index("## Goals") + 1
    while not lines[start].startswith("| goal |"):
        start += 1
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    labels = {goal for goal, _ in rows}
    table = [line for line in lines[start:end] if line.split(" | ")[0][2:] not in labels]
    table += [f"| {goal} | {outcome} (`bench/loop.py`, {when}) |" for goal, outcome in rows]
    return "\n".join(lines[:start] + table + lines[end:])


def write_docs(result: dict[str, object], section: str) -> None:
    docs = REPO / "docs" / "benchmarks.md"
    text = docs.read_text()
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    docs.write_text(with_goal_rows(text, goals(result), str(result["when"]).split()[0]))


def compile_testfleet() -> None:
    """testfleet's bytecode, as a pip install leaves it (pytest's and every other installed
    package's is there already). This checkout is an editable install, and machines like this
    one set PYTHONDONTWRITEBYTECODE=1, so without this every command would compile testfleet
    from source first, which no installed copy does."""
    import testfleet

    package = str(Path(testfleet.__file__).resolve().parent)
    subprocess.run([PY, "-m", "compileall", "-q", package], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 rounds, 1 for the synthetic suite")
    parser.add_argument("--rounds", type=int, help="rounds of parts 1-3 (default 7, 3 quick)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    synthetic_rounds = 1 if args.quick else 3
    began = time.perf_counter()
    compile_testfleet()
    measured = measure(rounds, synthetic_rounds)
    result: dict[str, object] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": shlex.join(["python", "bench/loop.py", *sys.argv[1:]]),
        "machine": machine(),
        "rounds": rounds,
        "took_s": round(time.perf_counter() - began, 1),
        **measured,
    }
    out = HERE / "results" / f"loop-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    section = render(result)
    write_docs(result, section)
    print(section)


if __name__ == "__main__":
    main()
