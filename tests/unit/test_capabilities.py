"""What a lane's pytest is started with: no capability of testfleet's own user namespace."""

from __future__ import annotations

import os
import shutil

import pytest

from testfleet import capabilities, netns
from testfleet.errors import ConfigError


def test_another_users_lane_sheds_every_capability(monkeypatch: pytest.MonkeyPatch):
    """In the user namespace testfleet made for itself, a lane's argv starts with setpriv
    clearing the ambient, inheritable and bounding sets."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv(capabilities.USERNS_VARIABLE, "1")
    argv = capabilities.as_the_user(["python", "-m", "pytest"])
    assert argv == [
        "setpriv",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
        "python",
        "-m",
        "pytest",
    ]


@pytest.mark.parametrize(("uid", "in_own_namespace"), [(0, False), (1000, False), (0, True)])
def test_capabilities_of_the_user_are_left_alone(
    monkeypatch: pytest.MonkeyPatch, uid: int, in_own_namespace: bool
):
    """Root keeps root's capabilities, as under plain pytest; a user testfleet gave nothing
    (no user namespace of its own) keeps what it has."""
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    if in_own_namespace:
        monkeypatch.setenv(capabilities.USERNS_VARIABLE, "1")
    else:
        monkeypatch.delenv(capabilities.USERNS_VARIABLE, raising=False)
    assert capabilities.as_the_user(["pytest"]) == ["pytest"]


def test_a_missing_setpriv_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch):
    """Another user cannot have namespaced lanes without a way to shed the capabilities."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "setpriv" else name)
    with pytest.raises(ConfigError, match=r"setpriv is missing \(apt-get install util-linux"):
        netns.check_available("tool.testfleet.network")


def test_the_wrapped_lane_enters_first_then_sheds(monkeypatch: pytest.MonkeyPatch):
    """nsenter needs the capabilities to enter the namespace; what it starts has none."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv(capabilities.USERNS_VARIABLE, "1")
    namespace = object.__new__(netns.LaneNamespace)
    namespace.path = "/proc/42/ns/net"
    argv = namespace.wrap(["python", "-m", "pytest"])
    assert argv[:3] == ["nsenter", "--net=/proc/42/ns/net", "--"]
    assert argv[3] == "setpriv"
    assert argv[-3:] == ["python", "-m", "pytest"]
