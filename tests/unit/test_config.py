"""Config validation: every user mistake is one line that names the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from testfleet.config import (
    PostgresSpec,
    default_exports,
    layer,
    load_project,
    start_order,
    validate,
)
from testfleet.errors import ConfigError
from tests.helpers import write_pyproject


def error_of(table: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate(table)
    assert "\n" not in info.value.message
    return info.value.message


def test_service_kind_defaults_to_its_name():
    """A service named after a kind needs no `kind` key."""
    config = validate({"services": {"postgres": {}, "cache": {"kind": "valkey"}}})
    assert isinstance(config.services["postgres"], PostgresSpec)
    assert config.services["cache"].kind == "valkey"


def test_unknown_key_suggests_the_close_one():
    message = error_of({"services": {"postgres": {"isolaton": "server"}}})
    assert message == (
        "unknown key tool.testfleet.services.postgres.isolaton; did you mean 'isolation'?"
    )


def test_snake_case_key_suggests_kebab_case():
    message = error_of(
        {"services": {"api": {"kind": "command", "command": "x {port}", "depends_on": []}}}
    )
    assert "did you mean 'depends-on'?" in message


def test_unknown_top_level_key():
    assert "did you mean 'timeout'?" in error_of({"timeuot": 3})


def test_wrong_type_names_key_and_value():
    message = error_of({"timeout": "soon"})
    assert message.startswith("tool.testfleet.timeout: ")
    assert "'soon'" in message


def test_bad_isolation_value_lists_choices():
    message = error_of({"services": {"postgres": {"isolation": "schema"}}})
    assert message.startswith("tool.testfleet.services.postgres.isolation: ")
    assert "'database'" in message
    assert "'server'" in message


def test_unknown_kind_by_name():
    message = error_of({"services": {"postgress": {}}})
    assert "'postgress' is not a service kind; add kind = one of" in message
    assert "did you mean 'postgres'?" in message


def test_unknown_kind_by_key():
    message = error_of({"services": {"db": {"kind": "mysql"}}})
    assert message.startswith("tool.testfleet.services.db.kind: unknown service kind 'mysql'")


def test_dependency_cycle_is_named():
    cmd = {"kind": "command", "command": "run {port}"}
    message = error_of(
        {
            "services": {
                "a": {**cmd, "depends-on": ["b"]},
                "b": {**cmd, "depends-on": ["a"]},
            }
        }
    )
    assert "depends-on forms a cycle" in message
    assert "a -> b -> a" in message or "b -> a -> b" in message


def test_unknown_dependency_suggests():
    message = error_of(
        {
            "services": {
                "postgres": {},
                "api": {"kind": "command", "command": "x {port}", "depends-on": ["postgress"]},
            }
        }
    )
    assert message == (
        "tool.testfleet.services.api.depends-on: no service named 'postgress';"
        " did you mean 'postgres'?"
    )


def test_placeholder_needs_dependency():
    message = error_of(
        {
            "services": {
                "postgres": {},
                "api": {"kind": "command", "command": "x {port}", "env": {"DB": "{postgres.url}"}},
            }
        }
    )
    assert "add 'postgres' to depends-on" in message


def test_placeholder_unknown_field():
    message = error_of({"services": {"postgres": {}}, "env": {"X": "{postgres.uri}"}})
    assert "postgres has no 'uri'; did you mean 'url'?" in message


def test_placeholder_unknown_service():
    message = error_of({"services": {"postgres": {}}, "env": {"X": "{postgre.url}"}})
    assert "names no service; did you mean 'postgres'?" in message


def test_command_without_readiness_or_port():
    message = error_of({"services": {"worker": {"kind": "command", "command": "run-worker"}}})
    assert "no readiness check" in message


def test_ready_needs_exactly_one_way():
    message = error_of(
        {
            "services": {
                "api": {
                    "kind": "command",
                    "command": "x {port}",
                    "ready": {"http": "/h", "tcp": True},
                }
            }
        }
    )
    assert message.startswith("tool.testfleet.services.api.ready: set exactly one of")


def test_export_collision():
    message = error_of(
        {
            "services": {
                "postgres": {"export": {"DATABASE_URL": "{url}"}},
                "other": {"kind": "postgres", "export": {"DATABASE_URL": "{url}"}},
            }
        }
    )
    assert "DATABASE_URL is exported by postgres too" in message


def test_default_exports_follow_service_names():
    assert default_exports("postgres", "postgres") == {"POSTGRES_URL": "{url}"}
    assert default_exports("valkey", "valkey") == {"VALKEY_URL": "{url}", "REDIS_URL": "{url}"}
    assert default_exports("sessions", "valkey") == {"SESSIONS_URL": "{url}"}
    assert default_exports("vault", "vault") == {"VAULT_ADDR": "{addr}", "VAULT_TOKEN": "{token}"}


def test_start_order_levels():
    """Independent services share a level, so they start in parallel."""
    cmd = {"kind": "command", "command": "x {port}"}
    config = validate(
        {
            "services": {
                "postgres": {},
                "valkey": {},
                "api": {**cmd, "depends-on": ["postgres", "valkey"]},
                "worker": {**cmd, "depends-on": ["api"]},
            }
        }
    )
    assert start_order(config) == [["postgres", "valkey"], ["api"], ["worker"]]


def test_layers_cli_over_env_over_file():
    raw, sources = layer(
        {"timeout": 10, "junit-xml": "file.xml", "dotenv": "f.env"},
        cli={"timeout": 30.0},
        environ={"TESTFLEET_TIMEOUT": "20", "TESTFLEET_JUNIT_XML": "env.xml"},
    )
    assert (raw["timeout"], raw["junit-xml"], raw["dotenv"]) == (30.0, "env.xml", "f.env")
    assert sources == {
        "timeout": "--timeout",
        "junit-xml": "TESTFLEET_JUNIT_XML",
        "dotenv": "pyproject.toml",
    }


def test_extra_pytest_args_append():
    raw, _ = layer({"pytest-args": ["-q"]}, cli={"extra_pytest_args": ["-k", "x"]}, environ={})
    assert raw["pytest-args"] == ["-q", "-k", "x"]


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"^TESTFLEET_TIMEOUT='-1': must be a positive"):
        layer({}, cli={}, environ={"TESTFLEET_TIMEOUT": "-1"})


def test_value_error_names_its_source():
    """A bad value that came from an env var or flag says so: the file is not to blame."""
    with pytest.raises(ConfigError, match=r"\(from TESTFLEET_PYTHON\)$"):
        validate({"python": 3}, {"python": "TESTFLEET_PYTHON"})


def test_missing_table_says_how_to_add_it(tmp_path: Path):
    write_pyproject(tmp_path, "")
    with pytest.raises(ConfigError, match=r"has no \[tool.testfleet\] table; add one"):
        load_project(tmp_path, environ={})


def test_toml_syntax_error_is_one_line(tmp_path: Path):
    write_pyproject(tmp_path, "[tool.testfleet\n")
    with pytest.raises(ConfigError, match="cannot read it as TOML"):
        load_project(tmp_path, environ={})


def test_found_from_a_subdirectory(tmp_path: Path):
    write_pyproject(tmp_path, "[tool.testfleet]\ntimeout = 5\n")
    (tmp_path / "tests" / "deep").mkdir(parents=True)
    loaded = load_project(tmp_path / "tests" / "deep", environ={})
    assert loaded.root == tmp_path.resolve()
    assert loaded.config.timeout == 5


def test_config_is_frozen():
    config = validate({"timeout": 3})
    with pytest.raises(ValueError, match="frozen"):
        config.timeout = 4  # type: ignore[misc]
