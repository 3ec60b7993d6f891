"""A lane's pytest holds no capability its user would not hold under plain pytest.

Another user's testfleet runs in a user namespace of its own (see `netns.reexec_argv`), where
`unshare --keep-caps` makes every capability of that namespace *ambient*: its children
(unshare, nsenter) keep them across execve, which is how they make and enter the lanes'
network namespaces. A lane's pytest would keep them too, and its tests would then read a
mode-000 file of the user's own (CAP_DAC_OVERRIDE) or bind ports below 1024: a suite that
passes in a lane would fail under plain pytest. So once nsenter has entered the namespace,
`setpriv` clears the ambient and inheritable sets and the bounding set; the execve of pytest
by a user other than root then leaves it none (the kernel keeps only ambient ones).

`setpriv` (util-linux, like unshare and nsenter) rather than prctl through ctypes in a Python
of our own: ~2 ms a lane instead of ~100 ms, and nothing runs between it and pytest.

As root, lanes keep root's capabilities: plain pytest as root has them too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

# Set by testfleet in its own environment when it re-ran itself in a user namespace: the
# capabilities it holds there are the namespace's gift, not the user's.
USERNS_VARIABLE = "_TESTFLEET_USERNS"
SETPRIV = "setpriv"
DROP_ALL = [SETPRIV, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]


def granted_by_user_namespace() -> bool:
    """Whether this process holds capabilities only because testfleet made a user namespace
    for itself (a user other than root: see netns.needs_user_namespace)."""
    return USERNS_VARIABLE in os.environ and os.geteuid() != 0


def missing() -> str | None:
    """Why the capabilities of lanes could not be dropped here, or None."""
    if shutil.which(SETPRIV) is None:
        return "setpriv is missing (apt-get install util-linux, apk add setpriv)"
    return None


def as_the_user(argv: Sequence[str]) -> list[str]:
    """`argv` with the capabilities its user holds outside testfleet's user namespace (none),
    for it and everything it starts; `argv` itself where nothing was granted."""
    return [*DROP_ALL, *argv] if granted_by_user_namespace() else list(argv)
