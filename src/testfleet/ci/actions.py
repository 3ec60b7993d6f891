"""Every action the generated GitHub workflows use, pinned to a full commit SHA with its
version as a comment (`uses: actions/checkout@<sha>  # v7.0.1`).

A tag can be moved by whoever controls the action's repository; a commit cannot. The SHAs
were read from each action's own repository at the tag named here (`git rev-parse
vX.Y.Z^{commit}`); update them together, and only to a tag of the action's own repository.
All of them run on node24 (runner 2.327.1 or newer, also on self-hosted runners).
"""

from __future__ import annotations

from dataclasses import dataclass

from testfleet.ci.yamltext import Commented


@dataclass(frozen=True)
class Action:
    repository: str  # owner/name
    version: str  # the tag the commit carries
    commit: str  # its full SHA
    path: str = ""  # an action inside the repository ("restore" of actions/cache)

    def uses(self) -> Commented:
        where = f"{self.repository}/{self.path}" if self.path else self.repository
        return Commented(f"{where}@{self.commit}", self.version)


CHECKOUT = Action("actions/checkout", "v7.0.1", "3d3c42e5aac5ba805825da76410c181273ba90b1")
SETUP_PYTHON = Action("actions/setup-python", "v7.0.0", "5fda3b95a4ea91299a34e894583c3862153e4b97")
SETUP_UV = Action("astral-sh/setup-uv", "v10.0.1", "20cfd1bf945f4377ade1205e4dbc17946fc9a30d")
_CACHE = ("actions/cache", "v5.0.5", "27d5ce7f107fe9357f9df03efb73ab90386fccae")
CACHE = Action(*_CACHE)
CACHE_RESTORE = Action(*_CACHE, path="restore")
CACHE_SAVE = Action(*_CACHE, path="save")
UPLOAD = Action("actions/upload-artifact", "v7.0.0", "bbbca2ddaa5d8feaa63e36b76fdaad77386f024f")
DOWNLOAD = Action("actions/download-artifact", "v8.0.1", "3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c")

ALL = (CHECKOUT, SETUP_PYTHON, SETUP_UV, CACHE, CACHE_RESTORE, CACHE_SAVE, UPLOAD, DOWNLOAD)
