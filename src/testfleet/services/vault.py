"""Vault API through OpenBao's (or Vault's) dev server: in memory, unsealed, a random root
token per run, a server per lane."""

from __future__ import annotations

import signal
from collections.abc import Mapping

from testfleet import readiness
from testfleet.backends.native import server_environ
from testfleet.config import VaultSpec
from testfleet.services.base import HOST, ServiceView, StackContext, start_on_free_port


class VaultService:
    def __init__(self, name: str, spec: VaultSpec, ctx: StackContext) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.token = ctx.secret()

    def start(self) -> None:
        """Every lane gets its own server; nothing is shared."""

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        folder = self.ctx.folder(self.name, f"lane{lane}")
        binary = self.ctx.binaries[self.name]
        # The dev server writes its token to ~/.vault-token; keep the user's own file intact,
        # and keep the user's VAULT_*/BAO_* settings from steering our server.
        environ = server_environ(None)
        env = {k: v for k, v in environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(folder)
        # The token goes through the environment: a command-line flag would show it in `ps`.
        env["BAO_DEV_ROOT_TOKEN_ID"] = env["VAULT_DEV_ROOT_TOKEN_ID"] = self.token

        def argv(port: int) -> list[str]:
            return [
                str(binary.path),
                "server",
                "-dev",
                f"-dev-listen-address={HOST}:{port}",
                "-dev-no-store-token",
            ]

        _, port = start_on_free_port(
            self.ctx,
            f"{self.name} (lane {lane})",
            argv,
            lambda port, _: readiness.http(
                f"http://{HOST}:{port}/v1/sys/health",
                expect_json={"initialized": True, "sealed": False},
            ),
            log_path=folder / "server.log",
            # Nothing to keep: the data is thrown away with the run, so no graceful shutdown.
            stop_signal=signal.SIGKILL,
            timeout=self.spec.start_timeout,
            env=env,
            cwd=folder,
            fixed_port=self.spec.port,
            # The dev server prints its root token in a banner: keep it out of the log.
            redact=[self.token],
        )
        addr = f"http://{HOST}:{port}"
        return ServiceView(
            self.name,
            "vault",
            {
                "url": addr,
                "addr": addr,
                "host": HOST,
                "port": str(port),
                "token": self.token,
            },
        )

    def stop(self) -> None:
        """Processes are stopped by the supervisor; nothing else to release."""


def planned(spec: VaultSpec) -> dict[str, str]:
    """Lane 1's values in the shape a run gives them, for planning without a server."""
    port = str(spec.port or 8200)
    addr = f"http://{HOST}:{port}"
    return {"url": addr, "addr": addr, "host": HOST, "port": port, "token": ""}
