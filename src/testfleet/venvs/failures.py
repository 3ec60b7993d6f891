"""uv's failures as one-line errors that say what to change, with uv's last lines (credentials
masked) as their details: the user's mistakes (a misspelt extra or group, an excluded Python)
are ConfigErrors, anything else a ServiceError."""

from __future__ import annotations

import re
from collections.abc import Mapping

from testfleet.credentials import mask_credentials
from testfleet.errors import ConfigError, ServiceError
from testfleet.venvs.uv import UvOutput

DETAIL_LINES = 20

# uv's wording for mistakes in what the user asked for, and what to change.
_USER_MISTAKES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"(extra `[^`]+` is not defined|does not have an extra named)", re.I),
        "fix the name in extras, or add it to [project.optional-dependencies]",
    ),
    (
        re.compile(r"group (`[^`]+`|'[^']+') (is not defined|was not found)", re.I),
        "fix the name in dependency-groups, or add it to [dependency-groups]",
    ),
    (
        re.compile(
            r"(not compatible with the locked Python requirement|"
            r"current Python version .* does not satisfy Python)",
            re.I,
        ),
        "drop this version from python, or widen the project's requires-python",
    ),
    (
        # setuptools refuses to guess which of a repository root's folders make the package,
        # so uv cannot install the project into the environment it makes.
        re.compile(r"Multiple top-level (packages|modules) discovered in a flat-layout", re.I),
        'give the interpreter\'s path for such layouts (python = "PATH" in [tool.testfleet]'
        " or --python PATH: an environment the suite's requirements are installed in), or"
        " name the project's packages in [tool.setuptools] packages",
    ),
)


def uv_failure(
    label: str,
    step: str,
    out: UvOutput,
    environ: Mapping[str, str],
    *,
    fix: str | None,
    timeout: float,
) -> ConfigError | ServiceError:
    """The error for uv's `step` (failed or timed out) while making the venv of `label`."""
    text = mask_credentials(out.text, environ)
    lines = [line for line in text.splitlines() if line.strip()]
    details = "\n".join(lines[-DETAIL_LINES:])
    if out.timed_out:
        return ServiceError(
            f"python {label}: uv {step} did not finish in {timeout:g} s and was stopped;"
            " check that the package index is reachable",
            details=details,
        )
    for pattern, mistake_fix in _USER_MISTAKES:
        for line in lines:
            if pattern.search(line):
                said = line.strip().removeprefix("error: ").removeprefix("cause: ").rstrip(".")
                return ConfigError(f"python {label}: uv: {said}; {mistake_fix}", details=details)
    fix = fix or "its output is below (an unreachable index, or a package that fails to build?)"
    return ServiceError(
        f"python {label}: uv {step} failed (exit {out.returncode}); {fix}",
        details=details,
    )
