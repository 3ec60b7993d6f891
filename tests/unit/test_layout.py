"""The shape of the source tree: rooms of a readable size, imports that never run in a circle,
a command per module, and lane code that needs nothing but the standard library and pytest."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testfleet.cli import COMMANDS
from tests.helpers import REPO

SRC = REPO / "src"
PACKAGE = SRC / "testfleet"
MAX_LINES = 500
MAX_CLI_LINES = 300


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The package's modules that `path` imports, anywhere in it: at the top, inside functions
    and under TYPE_CHECKING alike (each is an arrow of the house)."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1]])
                base = f"{base}.{node.module}" if node.module else base
            # `from a import b`: the submodule a.b when there is one, else the module a.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        yield from (name for name in names if name in known)


def test_no_module_is_over_500_lines():
    """A module past 500 lines mixes concerns: split it by what it does."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_cli_is_a_parser_and_a_table_of_commands():
    """cli.py stays small: the commands live in commands/, one module each."""
    assert len((PACKAGE / "cli.py").read_text().splitlines()) <= MAX_CLI_LINES
    commands = {p.stem for p in (PACKAGE / "commands").glob("*.py")} - {"__init__", "common"}
    assert commands == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_adds_its_arguments_and_runs(name: str):
    """A command module has the two functions cli.py calls."""
    module = __import__(f"testfleet.commands.{name}", fromlist=["main"])
    assert callable(module.add_arguments)
    assert callable(module.main)


def test_no_import_circle():
    """The modules' imports form no circle, counting every import (function-level and
    TYPE_CHECKING ones too)."""
    known = modules()
    graph = {name: set(imported(path, known)) - {name} for name, path in known.items()}
    # A package imports its face (__init__) implicitly; an explicit arrow back to it counts.
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []


# What runs inside a lane's pytest, in the project's interpreter, where testfleet's own
# dependencies (pydantic, rich, ...) may be missing.
LANE_MODULES = ("testfleet.worker", "testfleet.pytest_plugin", "testfleet.protocol")


def test_lane_code_imports_only_the_standard_library_pytest_and_the_protocol():
    """worker/ (and the fixtures plugin and the protocol they speak) import nothing else."""
    known = modules()
    # coverage: imported only when the run measures coverage, which installs it there.
    allowed = set(sys.stdlib_module_names) | {"pytest", "_pytest", "testfleet", "coverage"}
    allowed_ours = {"testfleet.protocol", "testfleet.pytest_plugin"}
    for name, path in known.items():
        if not name.startswith(LANE_MODULES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                module = node.module or ""
                names = [
                    f"{module}.{a.name}" if module == "testfleet" else module for a in node.names
                ]
            else:
                continue
            for imported_name in names:
                top = imported_name.split(".")[0]
                assert top in allowed, f"{name} imports {imported_name}"
                # worker/'s modules may import each other: they keep the same rule.
                if top == "testfleet" and not imported_name.startswith("testfleet.worker"):
                    assert imported_name in allowed_ours, f"{name} imports {imported_name}"


def test_docs_layout_names_every_module() -> None:
    """docs/layout.md is the newcomer's map: a module it does not name is a room nobody finds."""
    text = (REPO / "docs" / "layout.md").read_text()
    named = set(re.findall(r"`([^`]+)`", text))
    unnamed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py" and relative.parent != Path("."):
            # a package is named by its folder (`lanes/`) or, for a kind, the kinds' folder
            folder = f"{relative.parent.as_posix()}/"
            if folder not in named and not folder.startswith("kinds/"):
                unnamed.append(folder)
            continue
        if not ({path.name, relative.as_posix()} & named):
            unnamed.append(relative.as_posix())
    assert not unnamed, f"docs/layout.md does not name: {', '.join(unnamed)}"
