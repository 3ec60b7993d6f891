"""Integration fixtures: real stacks, always torn down, and checked against the process table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from testfleet.runtime import Run
from testfleet.stack import Stack, resolve_binaries
from tests.helpers import alive, project, recorded_pids

pytestmark = pytest.mark.integration

StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """Start a stack from a `[tool.testfleet]` dict; teardown asserts no process survives."""
    runs: list[tuple[Run, Stack]] = []
    with ExitStack() as exits:

        def make(table: dict[str, Any], *, lanes: int = 1, start: bool = True) -> Stack:
            loaded = project(tmp_path, table)
            # The default base (tmpfs): under root, PostgreSQL runs as an unprivileged user that
            # cannot enter pytest's private tmp_path.
            run = exits.enter_context(Run())
            stack = Stack(loaded, run, resolve_binaries(loaded), lanes=lanes)
            exits.callback(stack.stop)
            runs.append((run, stack))
            if start:
                stack.start()
            return stack

        yield make
        pids = [
            recorded_pids(run.run_dir.path)
            for run, _ in runs
            if (run.run_dir.path / "pids").exists()
        ]
    for run, _ in runs:
        assert not run.run_dir.path.exists(), "run directory left behind"
    assert alive([p for group in pids for p in group]) == [], "processes left running"
