"""Config validation: every user mistake is one line that names the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from testfleet.config import Config
from testfleet.config_rules import check_lanes, start_order
from testfleet.errors import ConfigError
from testfleet.kinds import KINDS
from testfleet.kinds.command.spec import CommandSpec
from testfleet.kinds.postgres.spec import PostgresSpec
from testfleet.kinds.vault.spec import VaultSpec
from testfleet.options import OPTIONS
from testfleet.project import layer, load_project, validate
from testfleet.stack import service_exports
from tests.helpers import write_pyproject


def error_of(table: dict[str, Any]) -> str:
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
    assert KINDS["postgres"].exports_for("postgres") == {"POSTGRES_URL": "{url}"}
    assert KINDS["valkey"].exports_for("valkey") == {"VALKEY_URL": "{url}"}
    assert KINDS["valkey"].exports_for("redis") == {"VALKEY_URL": "{url}", "REDIS_URL": "{url}"}
    assert KINDS["valkey"].exports_for("sessions") == {"SESSIONS_URL": "{url}"}
    assert KINDS["vault"].exports_for("vault") == {"VAULT_ADDR": "{addr}", "VAULT_TOKEN": "{token}"}
    assert KINDS["postgres"].exports_for("db") == {"DB_URL": "{url}"}


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
    """Without a table and without --with: add one, or name the services with --with."""
    write_pyproject(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path, environ={})
    assert info.value.message == (
        f"{tmp_path / 'pyproject.toml'} has no [tool.testfleet] table; add one (see the"
        " README's example), or name the services to start with --with postgres,valkey"
        " (or TESTFLEET_WITH)"
    )


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
        config.timeout = 4


# -- values: one line each, naming the key and what is accepted ------------------------------

LANES_RULE = 'must be a whole number of lanes from 1 to 64, or "auto"'


def test_lanes_word_is_one_line():
    """A word for lanes gives one line with the rule, not pydantic's two union complaints."""
    with pytest.raises(ConfigError) as info:
        validate({"lanes": "four"})
    assert info.value.message == f"tool.testfleet.lanes: {LANES_RULE} (got 'four')"
    assert info.value.details == ""


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"lanes": True}, "lanes"),
        ({"timeout": True}, "timeout"),
        ({"test-timeout": True}, "test-timeout"),
        ({"coverage-fail-under": True}, "coverage-fail-under"),
        ({"services": {"postgres": {"start-timeout": True}}}, "services.postgres.start-timeout"),
        ({"services": {"valkey": {"port": True}}}, "services.valkey.port"),
        ({"services": {"valkey": {"password": 1}}}, "services.valkey.password"),
        ({"services": {"nats": {"export-defaults": "no"}}}, "services.nats.export-defaults"),
    ],
)
def test_booleans_and_numbers_are_not_interchangeable(table: dict[str, Any], key: str):
    """`lanes = true` is not one lane, nor `password = 1` a yes: pydantic's lax casts are off."""
    assert error_of(table).startswith(f"tool.testfleet.{key}: ")


@pytest.mark.parametrize("lanes", [0, 65, 100000, -1])
def test_lanes_out_of_range(lanes: int):
    """Lanes run from 1 to 64; the message says so."""
    assert error_of({"lanes": lanes}) == f"tool.testfleet.lanes: {LANES_RULE} (got {lanes})"


def test_lanes_bounds_are_accepted():
    """1, 64 and "auto" are all valid lane counts."""
    assert [validate({"lanes": n}).lanes for n in (1, 64, "auto")] == [1, 64, "auto"]


@pytest.mark.parametrize(
    ("variable", "text", "rule"),
    [
        ("TESTFLEET_LANES", "many", LANES_RULE),
        ("TESTFLEET_LANES", "65", LANES_RULE),
        ("TESTFLEET_TEST_TIMEOUT", "soon", "must be a positive number of seconds"),
        ("TESTFLEET_COVERAGE_FAIL_UNDER", "x", "must be a percentage from 0 to 100"),
        ("TESTFLEET_GROUP_BY", "bogus", "must be one of module, class, test"),
        ("TESTFLEET_PYTEST_ARGS", "-k 'x", "must be shell-quoted arguments"),
    ],
)
def test_bad_env_value_says_what_is_accepted(variable: str, text: str, rule: str):
    """An env var's bad value is one line naming the variable and the rule, not int()'s text."""
    with pytest.raises(ConfigError) as info:
        layer({}, cli={}, environ={variable: text})
    assert info.value.message.startswith(f"{variable}={text!r}: {rule}")


@pytest.mark.parametrize(
    ("argv", "flag", "rule"),
    [
        (["run", "-n", "abc"], "-n/--lanes", LANES_RULE),
        (["run", "-n", "500"], "-n/--lanes", LANES_RULE),
        (["plan", "-n", "100000"], "-n/--lanes", LANES_RULE),
        (["run", "--timeout", "soon"], "--timeout", "must be a positive number of seconds"),
        (["run", "--test-timeout", "-1"], "--test-timeout", "must be a positive number"),
        (["run", "--coverage-fail-under", "x"], "--coverage-fail-under", "must be a percentage"),
        (["plan", "--group-by", "bogus"], "--group-by", "must be one of module, class, test"),
    ],
)
def test_bad_flag_value_names_the_flag_and_the_rule(argv: list[str], flag: str, rule: str):
    """argparse shows the option's own rule, not "invalid _lanes value"."""
    from testfleet.cli import build_parser

    with pytest.raises(ConfigError) as info:
        build_parser(argv[0]).parse_args(argv)
    assert info.value.message.startswith(f"argument {flag}: {rule}")
    assert repr(argv[-1]) in info.value.message


def test_several_problems_are_still_one_line():
    """Pydantic's list of errors becomes the first one and a count of the rest."""
    with pytest.raises(ConfigError) as info:
        validate({"timeout": "soon", "group-by": "file", "junit-xml": 3})
    assert info.value.message.endswith("(and 2 more problems)")
    assert info.value.details == ""


def test_union_value_error_names_the_key_only():
    """A key with two accepted forms names the key, without pydantic's member tags."""
    message = error_of({"services": {"postgres": {"setup": 3}}})
    assert message == (
        "tool.testfleet.services.postgres.setup: must be a shell command (a string) or an argv"
        " (a non-empty list of strings) (got 3)"
    )


def test_error_inside_ready_names_ready():
    """The kind tag of a command service is not mistaken for its `command` key."""
    cmd = {"kind": "command", "command": "x {port}", "ready": {"tcp": "yes"}}
    message = error_of({"services": {"api": cmd}})
    assert message.startswith("tool.testfleet.services.api.ready.tcp: ")


def test_non_utf8_pyproject_is_one_line(tmp_path: Path):
    """A pyproject.toml in another encoding names the file, not a UnicodeDecodeError."""
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.testfleet]\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: not UTF-8 \(byte 0xe9 at offset 22\)"):
        load_project(tmp_path, environ={})


# -- placeholders, checked in every templated value before anything starts -------------------

CMD = {"kind": "command", "command": "serve {port}"}


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"env": {"A": "{lane"}}, "tool.testfleet.env.A"),
        ({"pytest-args": ["--x={lane"]}, "tool.testfleet.pytest-args[0]"),
        ({"services": {"postgres": {"export": {"A": "{url"}}}}, "services.postgres.export.A"),
        ({"services": {"api": {**CMD, "command": "serve {port"}}}, "services.api.command"),
        ({"services": {"api": {**CMD, "command": ["s", "{port"]}}}, "services.api.command[1]"),
        ({"services": {"api": {**CMD, "env": {"B": "{lane"}}}}, "services.api.env.B"),
        (
            {"services": {"api": {**CMD, "ready": {"command": "probe {url"}}}},
            "services.api.ready.command",
        ),
        (
            {"services": {"api": {**CMD, "ready": {"http": "http://{host:{port}/"}}}},
            "services.api.ready.http",
        ),
        ({"services": {"postgres": {"setup": "migrate {url"}}}, "services.postgres.setup"),
    ],
)
def test_unclosed_brace_names_the_key(table: dict[str, Any], key: str):
    """`{lane` without its `}` is an error naming the key and `{{`, wherever placeholders go."""
    message = error_of(table)
    assert key in message.split(":", 1)[0]
    assert "unclosed '{'" in message
    assert "write {{ for a literal brace" in message


def test_lone_closing_brace_is_refused():
    """A stray `}` is refused too, with `}}` as the way to write one."""
    message = error_of({"env": {"JSON": '{{"lane": {lane}}'}})
    assert message.startswith("tool.testfleet.env.JSON: a lone '}'")
    assert "write }} for a literal brace" in message


def test_literal_braces_and_log_regexes_pass():
    """`{{`/`}}` are literal braces; a log regex keeps its own braces (it is no template)."""
    validate(
        {
            "env": {"JSON": '{{"lane": {lane}}}'},
            "services": {"api": {**CMD, "ready": {"log": r"listening on \d{4,5}"}}},
        }
    )


def test_ready_command_placeholders_are_checked_at_validation():
    """A typo in ready.command is found before any service starts."""
    message = error_of({"services": {"api": {**CMD, "ready": {"command": "probe {uri}"}}}})
    assert message.startswith("tool.testfleet.services.api.ready.command: unknown placeholder")
    assert "did you mean 'url'?" in message


def test_ready_command_needs_dependency():
    """ready.command may use another service only when the command service depends on it."""
    ready = {"command": "pg_isready -d {postgres.url}"}
    message = error_of({"services": {"postgres": {}, "api": {**CMD, "ready": ready}}})
    assert "add 'postgres' to depends-on" in message


def test_ready_http_url_template_is_checked():
    """A ready.http URL (not a /path) is a template: its placeholders are checked."""
    message = error_of({"services": {"api": {**CMD, "ready": {"http": "http://{host}:{prot}/"}}}})
    assert "tool.testfleet.services.api.ready.http: unknown placeholder {prot}" in message


def test_setup_may_use_its_own_fields():
    """postgres.setup may use the service's own fields and the common placeholders."""
    validate({"services": {"postgres": {"setup": "migrate --url {url} --dir {project_dir}"}}})
    validate({"services": {"postgres": {"setup": ["migrate", "--db", "{database}"]}}})


def test_setup_placeholder_typo_is_refused():
    """An unknown placeholder in setup is found at validation."""
    message = error_of({"services": {"postgres": {"setup": "migrate --url {urll}"}}})
    assert message.startswith("tool.testfleet.services.postgres.setup: unknown placeholder {urll}")


def test_setup_cannot_use_other_services():
    """Setup runs once before any lane, so other services' values do not exist yet."""
    table = {"services": {"valkey": {}, "postgres": {"setup": "migrate {valkey.url}"}}}
    assert "setup runs once, before any lane" in error_of(table)


def test_shell_placeholder_expanded_into_another_shells_code_is_refused():
    """In a shell-string command, a value that `sh -c "..."` would run as code is refused at
    validation, naming the single-quoted form."""
    message = error_of({"services": {"api": {**CMD, "command": 'sh -c "serve {port}"'}}})
    assert message.startswith("tool.testfleet.services.api.command: {port} would be expanded")
    assert "sh -c '... {port} ...'" in message


# -- lanes the services can serve --------------------------------------------------------------


def test_valkey_database_isolation_caps_lanes_at_validation():
    """17 lanes on Valkey's 16 DB numbers is refused before anything starts."""
    table = {"lanes": 17, "services": {"valkey": {"isolation": "database"}}}
    message = error_of(table)
    assert message.startswith('tool.testfleet.services.valkey.isolation = "database"')
    assert "at most 16 lanes" in message
    assert 'isolation = "server"' in message


def test_check_lanes_after_auto():
    """check_lanes refuses the number `auto` resolved to, for the same reason."""
    config = validate({"lanes": "auto", "services": {"valkey": {"isolation": "database"}}})
    check_lanes(config, 16)
    with pytest.raises(ConfigError, match="at most 16 lanes"):
        check_lanes(config, 17)


@pytest.mark.parametrize(
    ("service", "exported"),
    [
        ({"valkey": {"port": 6379}}, "VALKEY_URL"),
        ({"postgres": {"port": 5432, "isolation": "server"}}, "POSTGRES_URL"),
        ({"nats": {"port": 4222}}, "NATS_URL"),
        ({"vault": {"port": 8200}}, "VAULT_ADDR"),
        ({"api": {"kind": "command", "command": "serve", "port": 8000}}, "{port}"),
    ],
)
def test_fixed_port_with_a_server_per_lane_needs_one_lane(service: dict[str, Any], exported: str):
    """A fixed port is fine for one lane; with two, each lane's own server would collide."""
    (name,) = service
    validate({"lanes": 1, "services": service})
    message = error_of({"lanes": 2, "services": service})
    port = service[name]["port"]
    assert message.startswith(
        f"tool.testfleet.services.{name}.port = {port}: every lane starts its own {name} server,"
        f" and only one can listen on port {port}; use -n 1"
    )
    assert exported in message


@pytest.mark.parametrize("kind", ["postgres", "valkey"])
def test_fixed_port_on_a_shared_server_allows_many_lanes(kind: str):
    """isolation = "database" runs one server for every lane, so a fixed port suits any -n."""
    config = validate({"lanes": 8, "services": {kind: {"port": 15000, "isolation": "database"}}})
    assert config.services[kind].port == 15000


@pytest.mark.parametrize("port", [0, 65536, "6379", 6379.5])
def test_port_must_be_a_port_number(port: object):
    """`port` takes a whole number from 1 to 65535."""
    message = error_of({"services": {"nats": {"port": port}}})
    assert message.startswith("tool.testfleet.services.nats.port: must be a TCP port number")


def test_command_with_fixed_port_needs_no_placeholder():
    """A command service with `port` gets the TCP check on it without `{port}` or `ready`."""
    config = validate({"services": {"api": {"kind": "command", "command": "serve", "port": 8000}}})
    api = config.services["api"]
    assert isinstance(api, CommandSpec)
    assert api.uses_port()


def test_two_services_on_one_fixed_port():
    """Two services cannot share a fixed port, even with one lane."""
    message = error_of({"services": {"valkey": {"port": 7000}, "nats": {"port": 7000}}})
    assert message.startswith("tool.testfleet.services.nats.port = 7000: valkey has that port")


# -- libpq variables -----------------------------------------------------------------------------

PG_VALUES = {
    "url": "postgresql://u:pw@h:1/d",
    "host": "h",
    "port": "1",
    "user": "u",
    "password": "pw",
    "database": "d",
}


def test_libpq_variables_only_when_asked():
    """PGHOST and friends change every libpq connection a suite makes: a postgres exports them
    only with `export = ["libpq"]`, with its values."""
    config = validate(
        {"services": {"main": {"kind": "postgres", "export": ["libpq"]}, "postgres": {}}}
    )
    first = service_exports("main", config.services["main"], PG_VALUES)
    second = service_exports("postgres", config.services["postgres"], PG_VALUES)
    assert first == {
        "MAIN_URL": PG_VALUES["url"],
        "PGHOST": "h",
        "PGPORT": "1",
        "PGUSER": "u",
        "PGPASSWORD": "pw",
        "PGDATABASE": "d",
    }
    assert second == {"POSTGRES_URL": PG_VALUES["url"]}


def test_export_defaults_false_drops_libpq_variables():
    """`export-defaults = false` drops the PG* variables with the rest of the defaults."""
    config = validate({"services": {"postgres": {"export-defaults": False}}})
    assert service_exports("postgres", config.services["postgres"], PG_VALUES) == {}


def test_libpq_variable_collision_names_both_services():
    """Another service exporting PGHOST collides with the postgres that asked for libpq's."""
    db2 = {"kind": "postgres", "export": {"PGHOST": "{host}"}}
    message = error_of({"services": {"postgres": {"export": ["libpq"]}, "db2": db2}})
    assert message == (
        "tool.testfleet.services.db2.export: PGHOST is exported by postgres too; rename one of them"
    )


def test_libpq_collision_found_from_either_side():
    """A service declared before the postgres that exports PGHOST collides too."""
    api = {**CMD, "export": {"PGHOST": "{host}"}}
    message = error_of({"services": {"api": api, "postgres": {"export": ["libpq"]}}})
    assert message.startswith("tool.testfleet.services.postgres.export: PGHOST is exported by api")


def test_export_sets_and_tables_in_one_list():
    """`export` is a table, or a list of the kind's sets and tables read as one table; a name
    that is no set of the kind is one line naming its sets."""
    both = {"export": ["libpq", {"DATABASE_URL": "{url}"}]}
    config = validate({"services": {"postgres": both, "valkey": {"export": ["redis"]}}})
    assert exported(config, "postgres") == {
        "POSTGRES_URL": "<postgres.url>",
        "PGHOST": "<postgres.host>",
        "PGPORT": "<postgres.port>",
        "PGUSER": "<postgres.user>",
        "PGPASSWORD": "<postgres.password>",
        "PGDATABASE": "<postgres.database>",
        "DATABASE_URL": "<postgres.url>",
    }
    assert exported(config, "valkey") == {"VALKEY_URL": "<valkey.url>", "REDIS_URL": "<valkey.url>"}
    assert error_of({"services": {"postgres": {"export": ["libpg"]}}}).startswith(
        "tool.testfleet.services.postgres.export: 'libpg' is not a set of variables this kind"
        ' exports (sets: "libpq")'
    )


def test_valkey_and_redis_side_by_side_each_export_their_own_url():
    """Comparing a suite on both: REDIS_URL is the Redis server's, VALKEY_URL Valkey's."""
    validate({"services": {"valkey": {}, "redis": {}}})
    assert KINDS["valkey"].exports_for("valkey") == {"VALKEY_URL": "{url}"}
    assert KINDS["redis"].exports_for("redis") == {"REDIS_URL": "{url}"}


# -- --with: services of a kind with their defaults, from the command line ------------------

WITH = next(option for option in OPTIONS if option.key == "with")


def exported(config: Config, name: str) -> dict[str, str]:
    """The variables `name` exports, with its fields' own placeholders as the values."""
    spec = config.services[name]
    values = {field: f"<{name}.{field}>" for field in KINDS[spec.kind].fields}
    return service_exports(name, spec, values)


def test_with_alone_makes_a_config_without_the_table(tmp_path: Path):
    """A project with no [tool.testfleet] gets each kind of --with, named after it, with its
    defaults and its usual variables; every option keeps its default."""
    write_pyproject(tmp_path, "")
    project = load_project(tmp_path, cli={"with": ("postgres", "valkey")}, environ={})
    config = project.config
    assert list(config.services) == ["postgres", "valkey"]
    assert (
        config.services["postgres"] == validate({"services": {"postgres": {}}}).services["postgres"]
    )
    postgres = config.services["postgres"]
    assert (postgres.backend_name, postgres.isolation_mode) == ("native", "database")
    assert exported(config, "postgres")["POSTGRES_URL"] == "<postgres.url>"
    assert exported(config, "postgres") == {"POSTGRES_URL": "<postgres.url>"}
    assert exported(config, "valkey") == {"VALKEY_URL": "<valkey.url>"}
    assert config.lanes == 1
    assert project.sources["services.postgres"] == "--with"


def test_with_from_the_env_var(tmp_path: Path):
    """TESTFLEET_WITH adds the same services, and messages name it as their source."""
    write_pyproject(tmp_path, "")
    project = load_project(tmp_path, environ={"TESTFLEET_WITH": "nats, vault"})
    assert list(project.config.services) == ["nats", "vault"]
    assert project.sources["services.nats"] == "TESTFLEET_WITH"


def test_with_flag_beats_the_env_var(tmp_path: Path):
    """As for every option: the flag's list replaces the env var's."""
    write_pyproject(tmp_path, "")
    project = load_project(
        tmp_path, cli={"with": ("valkey",)}, environ={"TESTFLEET_WITH": "postgres"}
    )
    assert list(project.config.services) == ["valkey"]


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("postgres,valkey", ("postgres", "valkey")),
        (" PostgreSQL , Valkey ", ("postgres", "valkey")),
        ("postgresql,postgres", ("postgres",)),
        ("valkey,,", ("valkey",)),
        ("", ()),
        (["mongodb", "neo4j"], ("mongodb", "neo4j")),
    ],
)
def test_with_reads_kinds_as_users_type_them(text: Any, kinds: tuple[str, ...]):
    """Any case, spaces around commas, `postgresql` for postgres (the workflow's toggle),
    each kind once; an empty value adds nothing."""
    assert WITH.parse(text) == kinds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "mysql",
            "'mysql' is not a service kind (kinds: postgres, mongodb, valkey, redis, nats,"
            " vault, neo4j)",
        ),
        ("postgres,valky", "'valky' is not a service kind (kinds: "),
        (
            "command",
            "a command service needs its command: declare it in pyproject.toml as"
            ' [tool.testfleet.services.NAME] with kind = "command"',
        ),
    ],
)
def test_with_refuses_what_it_cannot_start(text: str, message: str):
    """An unknown kind lists the kinds; `command` needs a declaration, so it says how."""
    with pytest.raises(ValueError, match=re.escape(message)):
        WITH.parse(text)


def test_with_unknown_kind_in_env_var_is_one_line():
    """The env var's value is refused by the same rule, naming the variable."""
    with pytest.raises(ConfigError) as info:
        layer({}, cli={}, environ={"TESTFLEET_WITH": "postgre"})
    assert info.value.message == (
        "TESTFLEET_WITH='postgre': 'postgre' is not a service kind (kinds: postgres, mongodb,"
        " valkey, redis, nats, vault, neo4j); did you mean 'postgres'?"
    )


def test_with_does_not_add_a_kind_the_file_declares():
    """A declared service of the kind is the one used, under its own name and settings;
    the other kinds are added after the declared services."""
    raw, sources = layer(
        {"services": {"db": {"kind": "postgres", "isolation": "server"}}},
        cli={"with": ("postgres", "valkey")},
        environ={},
    )
    config = validate(raw, sources)
    assert list(config.services) == ["db", "valkey"]
    assert config.services["db"].isolation_mode == "server"
    assert "POSTGRES_URL" not in exported(config, "db")
    assert set(sources) == {"with", "services", "services.valkey"}


def test_with_refuses_a_name_taken_by_another_kind():
    """A declared service named like the kind but of another kind keeps its name: one line
    naming it and the fixes."""
    table = {"services": {"valkey": {**CMD}}}
    with pytest.raises(ConfigError) as info:
        layer(table, cli={"with": ("valkey",)}, environ={})
    assert info.value.message == (
        "--with valkey: tool.testfleet.services.valkey is a command service, and an added"
        " Valkey service would take its name; rename that one, or declare the Valkey service"
        " yourself under another name"
    )
    with pytest.raises(ConfigError, match=r"^TESTFLEET_WITH=nats,valkey: tool.testfleet"):
        layer(table, cli={}, environ={"TESTFLEET_WITH": "nats,valkey"})


def test_with_is_not_a_key_of_the_table(tmp_path: Path):
    """`with` in the file would be replaced by the flag's list, dropping its services:
    refused, with the declaration to write instead."""
    write_pyproject(tmp_path, '[tool.testfleet]\nwith = ["postgres"]\n')
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path, environ={})
    assert info.value.message == (
        "tool.testfleet.with: only --with and TESTFLEET_WITH set it, for a run that adds to"
        " the file; in pyproject.toml declare each service instead:"
        " [tool.testfleet.services.postgres] (an empty table starts it with its defaults)"
    )


def test_empty_with_still_needs_the_table(tmp_path: Path):
    """TESTFLEET_WITH="" (a CI file with every toggle off) adds nothing and makes no config."""
    write_pyproject(tmp_path, "")
    with pytest.raises(ConfigError, match=r"has no \[tool.testfleet\] table"):
        load_project(tmp_path, environ={"TESTFLEET_WITH": ""})


def test_with_services_go_through_the_usual_rules():
    """An added service is validated as a declared one: lanes it cannot serve are refused."""
    raw, sources = layer(
        {"lanes": 17},
        cli={"with": ("valkey",)},
        environ={"TESTFLEET_BACKEND": "external"},
    )
    with pytest.raises(ConfigError, match=r"DB numbers, so at most 16 lanes \(this run has 17\)"):
        validate(raw, sources)


def test_with_on_the_external_backend_reads_the_kinds_own_variables():
    """With --backend external an added service reaches the server its usual variables
    name, as CI service containers are given."""
    raw, sources = layer({}, cli={"with": ("postgres", "vault"), "backend": "external"}, environ={})
    config = validate(raw, sources)
    postgres, vault = config.services["postgres"], config.services["vault"]
    assert isinstance(postgres, PostgresSpec)
    assert isinstance(vault, VaultSpec)
    assert postgres.url == "{env.POSTGRES_URL}"
    assert (vault.url, vault.token) == ("{env.VAULT_ADDR}", "{env.VAULT_TOKEN}")


def test_with_is_never_suggested_as_a_key():
    """An unknown key of the table is not told to be `with`, which the table refuses."""
    message = error_of({"wit": ["postgres"]})
    assert message.startswith("unknown key tool.testfleet.wit; known keys: backend, ")
    assert "with" not in message.split("known keys: ", 1)[1].split(", ")
