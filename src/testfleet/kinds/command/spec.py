"""What a `command` service accepts in `[tool.testfleet.services.NAME]`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StrictBool, model_validator

from testfleet.placeholders import references
from testfleet.specs import Model, ServiceSpec, command_value


class ReadyCheck(Model):
    """Exactly one way to tell that a command service is ready."""

    tcp: StrictBool = False
    http: str | None = None
    log: str | None = None
    command: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReadyCheck:
        chosen = [k for k in ("http", "log", "command") if getattr(self, k) is not None]
        chosen += ["tcp"] if self.tcp else []
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of tcp = true, http = '/path', log = 'regex', command = '...'"
            )
        if self.log is not None:
            try:
                re.compile(self.log)
            except re.error as exc:
                raise ValueError(f"log is not a valid regular expression: {exc}") from None
        return self


class CommandSpec(ServiceSpec):
    kind: Literal["command"] = "command"
    command: Annotated[str | tuple[str, ...], BeforeValidator(command_value)]
    ready: ReadyCheck | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None

    def templates(self) -> list[str]:
        parts = [self.command] if isinstance(self.command, str) else list(self.command)
        return parts + list(self.env.values()) + list(self.export.values()) + self.ready_templates()

    def ready_templates(self) -> list[str]:
        """`ready` values that are placeholder templates; a `/path` for http and a log regex
        are used as written (a regex has its own braces)."""
        ready = self.ready
        if ready is None:
            return []
        http = [ready.http] if ready.http is not None and not ready.http.startswith("/") else []
        return http + ([ready.command] if ready.command is not None else [])

    def uses_port(self) -> bool:
        """Whether the service listens on a port testfleet knows: a fixed `port`, or `{port}`
        in its templates (then a free one is picked); its `{url}` points there."""
        return self.port is not None or any("port" in references(t) for t in self.templates())
