"""`command` services: the user's own servers, one per lane, started after what they depend
on, with `{port}` and `{postgres.url}`-style placeholders. They run natively only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from testfleet.kinds.base import Kind
from testfleet.kinds.command.spec import CommandSpec
from testfleet.ports import HOST

if TYPE_CHECKING:
    from testfleet.service import Service, StackContext


def planned(spec: CommandSpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    port = str(spec.port_number or 8000)
    return {"url": f"http://{HOST}:{port}", "host": HOST, "port": port}


def runtime(name: str, spec: CommandSpec, ctx: StackContext, kind: Kind) -> Service:
    from testfleet.kinds.command.service import CommandService

    return CommandService(name, spec, ctx, kind)


KIND = Kind(
    name="command",
    label="command",
    spec=CommandSpec,
    fields=("url", "host", "port"),
    planned=planned,
    exports=lambda name: {},
    runtime=runtime,
    isolation={"native": ("server",)},
)
