"""The lane plugin through pytester: the `testfleet` fixture reads the lane's env."""

import json

import pytest

pytest_plugins = ["pytester"]


def test_fixture_gives_the_lanes_services(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TESTFLEET_RUN_ID", "r1")
    monkeypatch.setenv("TESTFLEET_LANE", "2")
    monkeypatch.setenv("TESTFLEET_LANES", "4")
    monkeypatch.setenv(
        "TESTFLEET_SERVICES",
        json.dumps({"postgres": {"url": "postgresql://u:p@127.0.0.1:5/test_2", "port": "5"}}),
    )
    pytester.makepyfile("""
        import pytest

        def test_lane(testfleet):
            assert (testfleet.lane, testfleet.lanes, testfleet.run_id) == (2, 4, "r1")
            assert testfleet.url("postgres").endswith("/test_2")
            assert testfleet.value("postgres", "port") == "5"
            with pytest.raises(LookupError, match="no valkey.url"):
                testfleet.url("valkey")
    """)
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["testfleet: run r1, lane 2/4, services: postgres", "*1 passed*"])


def test_fixture_outside_testfleet_fails_with_advice(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("TESTFLEET_RUN_ID", raising=False)
    pytester.makepyfile("def test_x(testfleet):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(
        ["*no testfleet stack: run the tests with `testfleet run`*", "*1 error*"]
    )
