"""Credentials for private package indexes reach uv and nothing else: lanes, setup commands
and services get a copy of the environment without them (`child_environ`), and whatever of
uv's output is shown has them masked (`mask_credentials`).

Standard library only: an early lane's environment is made before the rest of testfleet is
imported.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping

# uv's credentials for a named index; its docs also accept these for publishing.
_CREDENTIAL_VAR = re.compile(r"^UV_INDEX_[A-Z0-9_]+_(USERNAME|PASSWORD)$")
_SECRET_VARS = ("UV_PUBLISH_PASSWORD", "UV_PUBLISH_TOKEN")
# Index URLs may carry `user:password@`; UV_INDEX is a list of `name=url`, the extra ones are
# space-separated lists.
URL_VARS = (
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_FIND_LINKS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
)
# Greedy up to the last '@' before the path: an unencoded '@' in a password stays hidden.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")

# -- credentials -------------------------------------------------------------------------------


def _strip_userinfo(text: str) -> str:
    return _USERINFO.sub(lambda match: match.group("scheme"), text)


def child_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of `environ` for lanes and services: uv's index credentials are uv's alone."""
    child: dict[str, str] = {}
    for name, value in environ.items():
        if _CREDENTIAL_VAR.match(name) or name in _SECRET_VARS:
            continue
        child[name] = _strip_userinfo(value) if name in URL_VARS else value
    return child


def credential_values(environ: Mapping[str, str]) -> list[str]:
    """Every secret the index env vars hold, longest first (so no part of one is left)."""
    found: set[str] = set()
    for name, value in environ.items():
        if _CREDENTIAL_VAR.match(name) or name in _SECRET_VARS:
            found.add(value)
        elif name in URL_VARS:
            for match in _USERINFO.finditer(value):
                userinfo = match.group("userinfo")
                found.add(userinfo)
                found.update(userinfo.split(":", 1))
    # A tool may print the decoded form of a percent-encoded password.
    found |= {urllib.parse.unquote(value) for value in found}
    return sorted((value for value in found if value), key=len, reverse=True)


def mask_credentials(text: str, environ: Mapping[str, str]) -> str:
    """`text` with every credential from the index env vars replaced by `***`."""
    for secret in credential_values(environ):
        text = text.replace(secret, "***")
    # Credentials may also come from uv's own config files: never show a URL's userinfo.
    return _USERINFO.sub(lambda match: f"{match.group('scheme')}***@", text)
