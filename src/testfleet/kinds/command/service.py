"""`command` services: the user's own servers, one per lane, started after what they
depend on, with `{port}` and `{postgres.url}`-style placeholders. In a run that measures
coverage, a Python server measures itself too (lanes/measure.py)."""

from __future__ import annotations

from collections.abc import Mapping

from testfleet import readiness
from testfleet.backends.base import NativeLaunch, Probe, Server, Started
from testfleet.envvars import placeholder_environ, placeholder_values, process_environ
from testfleet.kinds.base import Kind
from testfleet.kinds.command.spec import CommandSpec
from testfleet.lanes import measure
from testfleet.placeholders import expand
from testfleet.service import HOST, ServiceView, StackContext
from testfleet.specs import TABLE


class CommandService:
    def __init__(self, name: str, spec: CommandSpec, ctx: StackContext, kind: Kind) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.kind = kind
        self.where = f"{TABLE}.services.{name}"

    def start(self) -> None:
        """Command services depend on lane values, so they start per lane."""

    def provision(self, lane: int, deps: Mapping[str, ServiceView]) -> ServiceView:
        spec, where = self.spec, self.where
        folder = self.ctx.folder(self.name, f"lane{lane}")
        cwd = (self.ctx.root / spec.cwd).resolve() if spec.cwd else self.ctx.root
        common = self.ctx.common_values(lane)
        dep_values = {name: view.values for name, view in deps.items()}
        base_env = process_environ(self.ctx.python)
        for name, view in deps.items():
            values = placeholder_values(view.values, dep_values, common)
            base_env.update(self.ctx.exports(name, values))
        base_env.update({"TESTFLEET_LANE": str(lane), "TESTFLEET_RUN_ID": self.ctx.run_id})
        # With --coverage a Python server measures itself, and saves when it is stopped.
        measuring = measure.process_environ(self.ctx.run_dir.path)
        base_env.update(measuring)

        def own(port: int) -> dict[str, str]:
            url = f"http://{HOST}:{port}" if spec.uses_port() else ""
            return {"port": str(port), "host": HOST, "url": url}

        def fill(template: str, port: int, key: str, *, shell: bool = False) -> str:
            values = placeholder_values(own(port), dep_values, common)
            return expand(template, values, where=f"{where}.{key}", shell=shell)

        def env(port: int) -> dict[str, str]:
            own_env = {k: fill(v, port, f"env.{k}") for k, v in spec.env.items()}
            # Last: the references in `command` and `ready.command` must find these values.
            values = placeholder_environ(placeholder_values(own(port), dep_values, common))
            return {**base_env, **own_env, **values}

        def argv(port: int) -> list[str]:
            if isinstance(spec.command, str):
                # Through /bin/sh so users may write `&&` and pipes; the stop signal goes to
                # the whole process group, so the server gets it, not only the shell.
                command = fill(spec.command, port, "command", shell=True)
                if measuring:
                    # The group is killed once the shell is gone, and a shell (dash) that
                    # does not exec its last command would go at once: with a trap it waits
                    # for the server to end, which saves its coverage data first.
                    command = f"trap 'exit 143' TERM; {command}"
                return [command]
            return [fill(part, port, "command") for part in spec.command]

        def probe(at: Started) -> Probe:
            port = at.port
            ready = spec.ready
            if ready is None or ready.tcp:
                return readiness.tcp(HOST, port)
            if ready.http is not None:
                path = ready.http
                url = (
                    f"http://{HOST}:{port}{path}"
                    if path.startswith("/")
                    else fill(path, port, "ready.http")
                )
                return readiness.http(url)
            if ready.log is not None:
                return readiness.log_line(at.handle, ready.log)
            assert ready.command is not None
            return readiness.command(
                self.ctx.supervisor,
                f"{self.name} (lane {lane})",
                fill(ready.command, port, "ready.command", shell=True),
                env=env(port),
                cwd=cwd,
                log_path=folder / "ready.log",
            )

        server = Server(
            f"{self.name} (lane {lane})",
            folder,
            probe,
            timeout=spec.start_timeout,
            port=spec.port_number,
            native=NativeLaunch(
                argv,
                env=env,
                cwd=cwd,
                shell=isinstance(spec.command, str),
                signal_group=True,
                # The app gets every URL with its password; it may well print one.
                redact=self.ctx.secrets,
            ),
        )
        port = self.ctx.start(spec, server).port
        return ServiceView(self.name, "command", own(port))

    def forget(self, lane: int) -> None:
        """Nothing of a lane's is left on a shared server: it has servers of its own."""

    def stop(self) -> None:
        """Processes are stopped by the supervisor; nothing else to release."""
