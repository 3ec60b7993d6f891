"""Vault API through OpenBao's (or Vault's) dev server: in memory, unsealed, a random root
token per run, a server per lane. On an external server each lane gets a KV v2 mount of its
own, made by testfleet and removed after the run; nothing else there is touched."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from testfleet import leftovers, readiness
from testfleet.backends.base import ContainerLaunch, NativeLaunch, Probe, Server
from testfleet.envvars import external_url
from testfleet.errors import ServiceError
from testfleet.kinds.base import Kind
from testfleet.kinds.vault.spec import VaultSpec
from testfleet.processes import server_environ
from testfleet.service import ServiceView, StackContext

HTTP_SECONDS = 10


def _health(host: str, port: int) -> Probe:
    return readiness.http(
        f"http://{host}:{port}/v1/sys/health",
        expect_json={"initialized": True, "sealed": False},
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
        self._mounts: list[str] = []
        self._mounts_lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        """Every lane gets its own server; an external one is checked once, here."""
        if self.spec.backend_name != "external":
            return
        assert self.spec.url is not None
        self._addr = external_url(self.name, self.spec.url, self.where).rstrip("/")
        url = urllib.parse.urlsplit(self._addr)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ServiceError(
                f"{self.where}.url: want http(s)://host:port, got {url.scheme or 'no scheme'}://…"
            )
        if self.spec.token is None:
            raise ServiceError(
                f'{self.where}: an external Vault needs a token; add token = "{{env.VAULT_TOKEN}}"'
            )
        self.token = external_url(self.name, self.spec.token, self.where, key="token")
        self.ctx.secrets.append(self.token)
        readiness.wait_external(
            readiness.http(f"{self._addr}/v1/sys/health", expect_json={"sealed": False}),
            timeout=self.spec.start_timeout,
            what=f"{self.name} at {self._addr}",
        )

    def _request(self, method: str, path: str, body: object | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self._addr}/v1/{path}",
            data=data,
            method=method,
            headers={"X-Vault-Token": self.token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_SECONDS):
                pass
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise ServiceError(
                f"{self.name}: {method} /v1/{path} answered HTTP {exc.code}; the token needs"
                f" permission to manage mounts (sys/mounts): {detail}"
            ) from None
        except OSError as exc:
            raise ServiceError(f"{self.name}: {method} /v1/{path} failed: {exc}") from None

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        if self.spec.backend_name == "external":
            return self._external_lane(lane)
        folder = self.ctx.folder(self.name, f"lane{lane}")
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
            f"{self.name} (lane {lane})",
            folder,
            lambda host, port, _: _health(host, port),
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
        )
        started = self.ctx.start(spec, server)
        addr = f"http://{started.host}:{started.port}"
        return ServiceView(
            self.name,
            "vault",
            {
                "url": addr,
                "addr": addr,
                "host": started.host,
                "port": str(started.port),
                "token": self.token,
                "mount": "secret",
            },
        )

    def _external_lane(self, lane: int) -> ServiceView:
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
        url = urllib.parse.urlsplit(self._addr)
        return ServiceView(
            self.name,
            "vault",
            {
                "url": self._addr,
                "addr": self._addr,
                "host": url.hostname or "",
                "port": str(url.port or (443 if url.scheme == "https" else 8200)),
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
