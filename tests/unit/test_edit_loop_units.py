"""Planning pieces of the edit-test loop: which `up` a run may share, how many lanes a
selection is worth, which command line starts a lane early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testfleet.lanes import early as early_lanes
from testfleet.lanes.count import lanes_for_selection
from testfleet.plan import work_source
from testfleet.recheck.lanes import recheck_args
from testfleet.up.dotenv import read_dotenv, write_dotenv
from testfleet.up.identity import differences, identity, not_shareable
from tests.helpers import project


def test_identity_names_settings_as_the_config_spells_them(tmp_path: Path):
    ours = identity(project(tmp_path, {"services": {"valkey": {"start-timeout": 31}}}))
    theirs = identity(project(tmp_path, {"services": {"valkey": {}}}))
    assert differences(ours, theirs) == ["services.valkey.start-timeout"]


def test_run_only_settings_do_not_change_the_identity(tmp_path: Path):
    services: dict[str, dict[str, object]] = {"postgres": {}}
    plain = identity(project(tmp_path, {"services": services}))
    busy = identity(
        project(
            tmp_path, {"services": services, "lanes": 4, "pytest-args": ["-x"], "coverage": True}
        )
    )
    assert differences(plain, busy) == []


def test_added_services_and_env_are_differences(tmp_path: Path):
    before = identity(project(tmp_path, {"services": {"postgres": {}}}))
    after = identity(
        project(tmp_path, {"services": {"postgres": {}, "nats": {}}, "env": {"MODE": "x"}})
    )
    assert differences(before, after) == ["env.MODE", "services.nats"]


def test_lanes_a_running_up_cannot_recycle_are_not_shared(tmp_path: Path):
    external = {"backend": "external", "url": "http://127.0.0.1:8200", "token": "t"}
    config = {"services": {"vault": {**external, "isolation": "mount"}}}
    assert 'isolation = "mount"' in (not_shareable(project(tmp_path, config)) or "")
    assert not_shareable(project(tmp_path, {"services": {"vault": {}}})) is None
    namespaced = {"network": "namespace", "services": {"valkey": {}}}
    assert "namespace" in (not_shareable(project(tmp_path, namespaced)) or "")
    mongo = {"services": {"mongodb": {"isolation": "database"}}}
    assert 'isolation = "database"' in (not_shareable(project(tmp_path, mongo)) or "")


def durations(tmp_path: Path, times: dict[str, float]) -> None:
    path = tmp_path / ".testfleet" / "durations.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"durations": times}))


def test_auto_lanes_for_a_selection_follow_its_measured_time(tmp_path: Path):
    durations(
        tmp_path,
        {"tests/test_a.py::t1": 0.3, "tests/test_b.py::t2": 5.0, "tests/test_b.py::t3": 2.5},
    )
    auto = project(tmp_path, {"lanes": "auto"})
    assert lanes_for_selection(auto, 4, ["tests/test_a.py"], last_failed=False) == 1
    assert lanes_for_selection(auto, 4, ["tests/test_b.py"], last_failed=False) == 4
    assert lanes_for_selection(auto, 4, ["tests"], last_failed=False) == 4
    assert lanes_for_selection(auto, 4, [str(tmp_path / "tests/test_a.py")], last_failed=False) == 1
    # A file without measured times, or no selection at all: as configured.
    assert lanes_for_selection(auto, 4, ["tests/test_new.py"], last_failed=False) == 4
    assert lanes_for_selection(auto, 4, [], last_failed=False) == 4
    # A number of lanes the user chose stays.
    fixed = project(tmp_path, {"lanes": 3})
    assert lanes_for_selection(fixed, 3, ["tests/test_a.py"], last_failed=False) == 3


def test_auto_lanes_for_the_last_failures(tmp_path: Path):
    durations(tmp_path, {"tests/test_a.py::t1": 0.3, "tests/test_b.py::t2": 5.0})
    cache = tmp_path / ".pytest_cache" / "v" / "cache"
    cache.mkdir(parents=True)
    (cache / "lastfailed").write_text(json.dumps({"tests/test_a.py::t1": True}))
    auto = project(tmp_path, {"lanes": "auto"})
    assert lanes_for_selection(auto, 4, [], last_failed=True) == 1


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["run"], "run"),
        (["-C", "x", "run", "-n", "2"], "run"),
        (["--project=x", "run"], "run"),
        (["--proj", "x", "plan"], "plan"),
        (["--p=x", "up"], "up"),
        (["run", "--", "-h"], "run"),
        (["run", "--help"], "run"),
        (["up"], "up"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_found_without_parsing_everything(argv: list[str], command: str | None):
    assert early_lanes.subcommand(argv) == command


def test_no_lane_is_started_early_for_other_commands_or_when_switched_off(monkeypatch):
    assert early_lanes.speculate(["up"]) is None
    assert early_lanes.speculate(["run", "--help"]) is None
    monkeypatch.setenv(early_lanes.SWITCH_VARIABLE, "0")
    assert early_lanes.speculate(["run"]) is None


def test_failed_first_hands_out_the_units_with_last_failures_first():
    measured = {"a.py::t": 5.0, "b.py::t": 1.0, "c.py::t": 3.0}
    source = work_source(
        measured, "module", keep_order=False, lanes=2, first=frozenset({"b.py::t"})
    )
    units = source("", list(measured)).units
    # The last failure first, then slowest first as always.
    assert [u.key for u in units] == ["b.py", "a.py", "c.py"]
    plain = work_source(measured, "module", keep_order=False, lanes=2)("", list(measured))
    assert [u.key for u in plain.units] == ["a.py", "c.py", "b.py"]


def test_rechecks_keep_keyword_and_marker_expressions(tmp_path: Path):
    (tmp_path / "tests").mkdir()
    args = ["-k", "tests", "-m", "slow or tests", "tests", "-x", "--lf", "-q"]
    assert recheck_args(project(tmp_path, {}), args) == ["-k", "tests", "-m", "slow or tests", "-q"]


def test_the_env_file_reads_back_what_was_written(tmp_path: Path):
    env = {"POSTGRES_URL": "postgresql://u:p@127.0.0.1:5/db", "ODD": "a b'c\"d $x", "EMPTY": ""}
    write_dotenv(tmp_path / "env", env)
    assert read_dotenv(tmp_path / "env") == env
