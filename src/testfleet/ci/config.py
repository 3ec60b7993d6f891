"""`[tool.testfleet.ci]`: what the generated CI files use unless a flag of `testfleet ci` says
otherwise. Read with the rest of `[tool.testfleet]`, so a misspelt key is one line there."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from testfleet.specs import Model

# GitHub's longest job timeout on self-hosted runners is 5 days; hosted runners stop at 6 h.
MAX_TIMEOUT_MINUTES = 5 * 24 * 60
DEFAULT_TIMEOUT_MINUTES = 30
RUNNER_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def runner_labels(text: str) -> tuple[str, ...]:
    """`self-hosted,linux,X64` -> its labels; every label a runner name could be."""
    labels = tuple(part.strip() for part in text.split(","))
    for label in labels:
        if not RUNNER_LABEL.fullmatch(label):
            raise ValueError(
                "must be runner labels separated by commas, such as self-hosted,linux,X64"
                f" (got {label!r})"
            )
    if len(set(labels)) != len(labels):
        raise ValueError("names a runner label twice")
    return labels


def one_line(text: str) -> str:
    if "\n" in text or "\r" in text or not text.strip():
        raise ValueError("must be one line of text")
    return text.strip()


class CiSettings(Model):
    """The defaults of `testfleet ci` for this project."""

    testfleet_spec: str | None = None
    runs_on: tuple[str, ...] | None = None
    timeout_minutes: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_MINUTES)

    @field_validator("testfleet_spec")
    @classmethod
    def _spec(cls, value: str | None) -> str | None:
        return None if value is None else one_line(value)

    @field_validator("runs_on", mode="before")
    @classmethod
    def _labels(cls, value: object) -> object:
        if isinstance(value, str):
            return runner_labels(value)
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return runner_labels(",".join(value))
        return value
