"""The registry of kinds is the one source: the docs' reference, the packaging extras and
`doctor` cannot fall behind it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from testfleet.errors import ConfigError
from testfleet.kinds import KINDS
from testfleet.project import validate
from tests.helpers import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REFERENCE = (REPO / "docs" / "configuration.md").read_text()


def kinds_table() -> dict[str, list[str]]:
    """The rows of the docs' "Kinds and backends" table, by kind."""
    section = REFERENCE.split("### Kinds and backends", 1)[1].split("\n\n", 3)[2]
    rows = {}
    for line in section.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_docs_table_lists_every_kind_with_its_image_and_isolation():
    table = kinds_table()
    assert set(table) == set(KINDS)
    for name, kind in KINDS.items():
        _, _, image, isolation = table[name]
        if kind.image:
            assert image == f"`{kind.image}`", name
        by_backend = [part.strip() for part in isolation.split(" / ")]
        expected = [", ".join(f"`{m}`" for m in modes) for modes in kind.isolation.values()]
        assert by_backend == expected, name


def test_every_kind_has_a_section_listing_its_fields():
    for name, kind in KINDS.items():
        if name == "redis":  # documented as "the same fields as valkey"
            assert "### redis" in REFERENCE
            continue
        section = REFERENCE.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        for field in kind.fields:
            assert f"`{field}`" in section, f"{name}: field {field} is not documented"


def test_extras_named_by_kinds_exist_in_pyproject():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for kind in KINDS.values():
        if kind.extra is not None:
            assert kind.extra in extras, f"{kind.name}: extra {kind.extra} is missing"
        for module in kind.drivers:
            assert any(module in dep for dep in extras[kind.extra or ""]), kind.name


def test_doctor_has_a_row_for_every_kind_with_a_native_binary():
    out = subprocess.run(
        [sys.executable, "-m", "testfleet", "doctor"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
    ).stdout
    labels = {line.split()[0] for line in out.splitlines() if line.strip()}
    for kind in KINDS.values():
        if kind.lookup is not None:
            assert kind.name in labels, f"doctor has no row for {kind.name}"
            row = next(line for line in out.splitlines() if line.startswith(kind.name + " "))
            assert kind.image is None or kind.image in row


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_validates_on_each_of_its_backends(name: str):
    """Every backend and isolation mode a record lists is accepted by the config; every
    backend it does not list is refused in one line."""
    kind = KINDS[name]
    base = {"command": "x {port}"} if name == "command" else {}
    for backend in ("native", "docker", "external"):
        spec = {**base, "kind": name}
        if name != "command":
            spec["backend"] = backend
        if backend == "external":
            spec["url"] = "{env.SOMEWHERE}"
            spec.update({key: "{env.ITS_KEY}" for key in kind.external_keys})
        if backend not in kind.backends:
            if name == "command":
                continue
            with pytest.raises(ConfigError, match=rf"run on .* only, not {backend}"):
                validate({"services": {"svc": spec}})
            continue
        for mode in kind.isolation[backend]:
            if name != "command":
                spec["isolation"] = mode
            config = validate({"services": {"svc": spec}})
            assert config.services["svc"].isolation_mode == mode


def test_planned_values_have_exactly_the_kinds_fields():
    for name, kind in KINDS.items():
        spec = {"command": "x {port}"} if name == "command" else {}
        config = validate({"services": {"svc": {**spec, "kind": name}}})
        assert tuple(kind.planned(config.services["svc"])) == kind.fields, name


def test_no_kind_is_named_in_an_if_chain_outside_its_module():
    """Kinds are records: code outside `kinds/` does not branch on one kind's name (the few
    places that must are listed here)."""
    # config.py: REDIS_URL goes to a redis service over a valkey one.
    allowed = {"config.py": 2}
    package = REPO / "src" / "testfleet"
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] == "kinds":
            continue
        hits = re.findall(r'spec\.kind (?:==|in) \(?"', path.read_text())
        assert len(hits) <= allowed.get(path.name, 0), f"{path}: {hits}"
