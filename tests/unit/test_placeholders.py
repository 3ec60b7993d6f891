"""Placeholders: `{name}` and `{service.field}` filled in; `{{`/`}}` stay literal braces."""

import pytest

from testfleet.errors import ConfigError
from testfleet.placeholders import expand, references


def test_references_in_order():
    assert references("{postgres.url} and {port} but {{not}}") == ["postgres.url", "port"]


def test_expand_fills_values():
    assert expand("http://{host}:{port}/", {"host": "h", "port": "1"}) == "http://h:1/"


def test_double_braces_are_literal():
    assert expand('{{"lane": {lane}}}', {"lane": "2"}) == '{"lane": 2}'


def test_missing_value_names_where():
    with pytest.raises(ConfigError, match=r"^env\.X: placeholder \{nope\} has no value here$"):
        expand("{nope}", {}, where="env.X")
