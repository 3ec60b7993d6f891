"""Vault API through OpenBao's (or Vault's) dev server: in memory, unsealed, a random root
token per run, a server per lane. On a shared server (an external one) each lane gets a KV v2
mount of its own, made by testfleet and removed after the run; nothing else there is
touched."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Mapping

from testfleet import leftovers, readiness, wire
from testfleet.backends.base import (
    Address,
    ContainerLaunch,
    ExternalLaunch,
    NativeLaunch,
    Probe,
    Server,
    Started,
)
from testfleet.backends.external import parse_url
from testfleet.envvars import external_url
from testfleet.errors import ServiceError
from testfleet.kinds.base import Kind
from testfleet.kinds.vault.spec import VaultSpec
from testfleet.processes import server_environ
from testfleet.service import ServiceView, StackContext

HTTP_SECONDS = 10  # one request to the server, from connecting to its answer's head
DETAIL_BYTES = 300  # of a refusal's body, quoted in the error


def _health(at: Started) -> Probe:
    """Ready when initialized and unsealed; an external server only has to be unsealed (it
    is someone else's to initialize)."""
    if at.address is not None:
        addr = at.address.url.rstrip("/")
        return readiness.http(f"{addr}/v1/sys/health", expect_json={"sealed": False})
    return readiness.http(
        f"http://{at.host}:{at.port}/v1/sys/health",
        expect_json={"initialized": True, "sealed": False},
    )


def _address(url: str) -> Address:
    return parse_url(
        url.rstrip("/"),
        schemes=("http", "https"),
        default_port=443 if url.startswith("https:") else 8200,
        want="http(s)://host:port",
    )


class VaultService:
    def __init__(self, name: str, spec: VaultSpec, ctx: StackContext, kind: Kind) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.kind = kind
        self.where = f"tool.testfleet.services.{name}"
        self.token = ctx.secret() if spec.backend_name != "external" else ""
        self._addr = ""
        self._shared: Started | None = None
        self._mounts: list[str] = []
        self._mounts_lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        """One server for every lane when lanes take a mount on it or share it (an external
        one); else each lane starts its own."""
        if self.spec.isolation_mode not in ("mount", "shared"):
            return
        if self.spec.token is not None:  # the server's own: it is not ours (the config checks)
            self.token = external_url(self.name, self.spec.token, self.where, key="token")
            self.ctx.secrets.append(self.token)
        self._shared = self._start_server("shared", "shared")
        self._addr = self._shared.address.url if self._shared.address else self._url(self._shared)

    def _request(self, method: str, path: str, body: object | None = None) -> None:
        """One request, bounded in time whatever the server does; a refusal's body is read
        only for its start."""
        try:
            answer = wire.request(
                f"{self._addr}/v1/{path}",
                method=method,
                headers={"X-Vault-Token": self.token, "Content-Type": "application/json"},
                body=json.dumps(body).encode() if body is not None else None,
                deadline=time.monotonic() + HTTP_SECONDS,
                read_body=lambda status: not 200 <= status < 300,
                body_limit=DETAIL_BYTES,
            )
        except (OSError, ValueError) as exc:
            raise ServiceError(f"{self.name}: {method} /v1/{path} failed: {exc}") from None
        if not 200 <= answer.status < 300:
            detail = answer.body.decode(errors="replace")
            raise ServiceError(
                f"{self.name}: {method} /v1/{path} answered HTTP {answer.status}; the token needs"
                f" permission to manage mounts (sys/mounts): {detail}"
            )

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        if self._shared is None:
            return self._view(self._start_server(f"lane{lane}", f"lane {lane}"), "secret")
        mount = "secret"
        if self.spec.isolation_mode == "mount":
            mount = f"testfleet-{self.ctx.run_id}-lane-{lane}"
            with self._mounts_lock:
                if self._stopping:
                    raise ServiceError(f"{self.name}: not provisioned, the run is stopping")
                # Recorded first, and made under the lock: a teardown waits for it, then
                # removes it.
                self._mounts.append(mount)
                leftovers.record(
                    self.ctx.run_dir.path, "vault", self._addr, mount, token=self.token
                )
                body = {"type": "kv", "options": {"version": "2"}}
                self._request("POST", f"sys/mounts/{mount}", body)
        return self._view(self._shared, mount)

    def _start_server(self, folder_name: str, label: str) -> Started:
        folder = self.ctx.folder(self.name, folder_name)
        spec = self.spec
        kind = self.kind
        # The dev server writes its token to ~/.vault-token; keep the user's own file intact,
        # and keep the user's VAULT_*/BAO_* settings from steering our server.
        environ = server_environ(None)
        env = {k: v for k, v in environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(folder)
        # The token goes through the environment: a command-line flag would show it in `ps`.
        tokens = {"BAO_DEV_ROOT_TOKEN_ID": self.token, "VAULT_DEV_ROOT_TOKEN_ID": self.token}
        env.update(tokens)
        inner = kind.inner_port or 8200

        def argv(port: int) -> list[str]:
            binary = self.ctx.binaries[self.name]
            return [
                str(binary.path),
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
                "-dev-no-store-token",
            ]

        server = Server(
            f"{self.name} ({label})",
            folder,
            self._probe,
            timeout=spec.start_timeout,
            port=spec.port_number,
            native=NativeLaunch(
                argv,
                env=env,
                cwd=folder,
                # Nothing to keep: the data is thrown away with the run, no graceful shutdown.
                stop_signal=signal.SIGKILL,
                # The dev server prints its root token in a banner: keep it out of the log.
                redact=[self.token],
            ),
            container=ContainerLaunch(
                image=spec.image or kind.image or "",
                inner_port=inner,
                # The binary first: the official image's entrypoint rewrites a bare `server`
                # into a command line that carries the root token, visible in `ps`.
                command=[
                    "vault" if "vault" in (spec.image or "").split("/")[-1] else "bao",
                    "server",
                    "-dev",
                    f"-dev-listen-address=0.0.0.0:{inner}",
                    "-dev-no-store-token",
                ],
                env=tokens,
                redact=self.ctx.secrets,
                limits=spec.limits,
            ),
            external=ExternalLaunch(self.name, spec.url or "", self.where, _address),
        )
        return self.ctx.start(spec, server)

    def _probe(self, at: Started) -> Probe:
        """Health, as `_health` says; on an external server the token too, once the server
        answers: one it refuses is final (every request of every lane would be refused), so
        the wait ends there rather than at start-timeout."""
        health = _health(at)
        if at.address is None:
            return health
        url = f"{at.address.url.rstrip('/')}/v1/auth/token/lookup-self"

        def check(left: float) -> None:
            health(left)
            answer = wire.request(
                url,
                headers={"X-Vault-Token": self.token},
                deadline=time.monotonic() + min(left, HTTP_SECONDS),
                read_body=lambda status: status in (401, 403),
                body_limit=DETAIL_BYTES,
            )
            if answer.status in (401, 403):
                detail = answer.body.decode(errors="replace").strip()
                raise readiness.AuthFailed(
                    f"HTTP {answer.status} from auth/token/lookup-self: {detail}",
                    credential="token",
                    key="token",
                    source=self.spec.token or "",
                )

        return check

    @staticmethod
    def _url(started: Started) -> str:
        return f"http://{started.host}:{started.port}"

    def _view(self, started: Started, mount: str) -> ServiceView:
        addr = started.address.url if started.address else self._url(started)
        return ServiceView(
            self.name,
            "vault",
            {
                "url": addr,
                "addr": addr,
                "host": started.host,
                "port": str(started.port),
                "token": self.token,
                "mount": mount,
            },
        )

    def forget(self, lane: int) -> None:
        """Lanes of isolation = "mount" are not handed out again (the record's
        `unrecycled`); a server per lane goes with the lane."""

    def stop(self) -> None:
        """Remove the mounts this run made; nothing else on an external server is touched."""
        with self._mounts_lock:
            self._stopping = True
            mounts, self._mounts = self._mounts, []
        for mount in mounts:
            # The server may have gone away; its mounts went with it, or stay for its owner.
            with contextlib.suppress(Exception):
                self._request("DELETE", f"sys/mounts/{mount}")
