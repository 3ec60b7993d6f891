"""The durations store: merged, never clobbered; pytest-split's file is read too."""

import json
from pathlib import Path

import pytest

from testfleet import durations
from testfleet.errors import ConfigError


def test_merge_keeps_other_tests(tmp_path: Path):
    store = tmp_path / ".testfleet" / "durations.json"
    durations.merge(store, {"a::t": 1.0, "b::t": 2.0})
    durations.merge(store, {"b::t": 3.0, "c::t": 0.5})
    assert durations.load(store, tmp_path) == {"a::t": 1.0, "b::t": 3.0, "c::t": 0.5}
    assert [p.name for p in store.parent.iterdir()] == ["durations.json"]  # no temp file left


def test_pytest_split_file_is_read_under_ours(tmp_path: Path):
    (tmp_path / ".test_durations").write_text(json.dumps({"a::t": 9.0, "b::t": 4.0}))
    store = tmp_path / "d.json"
    durations.merge(store, {"a::t": 1.0})
    assert durations.load(store, tmp_path) == {"a::t": 1.0, "b::t": 4.0}


def test_broken_file_names_the_fix(tmp_path: Path):
    store = tmp_path / "d.json"
    store.write_text("{not json")
    with pytest.raises(ConfigError, match=r"not a readable durations file .*; delete it"):
        durations.load(store, tmp_path)
