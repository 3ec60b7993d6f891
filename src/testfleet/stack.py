"""The stack: every configured service, started in dependency order (independent ones in
parallel), provisioned per lane, and torn down whatever happens."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

from testfleet.backends.base import Handle
from testfleet.binaries import Binary
from testfleet.config_rules import start_order
from testfleet.envvars import LANE_COUNT, placeholder_values
from testfleet.files import private_dir
from testfleet.kinds import KINDS
from testfleet.lanes.outcome import ServiceProblem
from testfleet.netns import LaneNamespace, start_namespace
from testfleet.placeholders import expand
from testfleet.processes import ManagedProcess, describe_exit, unprivileged_user
from testfleet.project import Project
from testfleet.runtime import Run
from testfleet.service import Service, ServiceView, StackContext
from testfleet.space import full_hint
from testfleet.specs import TABLE, ServerSpec, ServiceSpec
from testfleet.threads import wait_all

T = TypeVar("T")


@dataclass(frozen=True)
class LaneSetup:
    """A provisioned lane: its view of every service and the env vars built from them."""

    lane: int
    views: Mapping[str, ServiceView]
    env: Mapping[str, str]
    # With network = "namespace": the lane's own network, which its pytest joins too.
    namespace: LaneNamespace | None = None


class LaneProvider(Protocol):
    """Where a run's lanes come from: its own `Stack`, or a running `up`'s (SharedStack)."""

    run: Run

    def start(self) -> None: ...

    def provision(self, lane: int) -> LaneSetup: ...

    def release(self, lane: int) -> None: ...

    def expand_args(self, args: Sequence[str], lane: LaneSetup) -> list[str]: ...

    def problem(self) -> ServiceProblem | None: ...

    def stop(self) -> None: ...


def resolve_binaries(project: Project) -> dict[str, Binary]:
    """Every native server's binary, before anything starts: a missing one is a usage error."""
    return {
        name: KINDS[spec.kind].binary(spec.binary, where=f"{TABLE}.services.{name}")
        for name, spec in project.config.services.items()
        if isinstance(spec, ServerSpec) and spec.backend_name == "native"
    }


def in_parallel(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run tasks on threads; after all have ended, raise the first error if any failed.

    On Ctrl-C or SIGTERM it raises at once (whichever thread the signal went to) instead of
    waiting for the threads: teardown then stops the processes they wait on (a setup command, a
    server starting), which ends them.
    """
    if len(tasks) == 1:
        return [tasks[0]()]
    pool = ThreadPoolExecutor(max_workers=len(tasks))
    try:
        futures = [pool.submit(task) for task in tasks]
        # In slices: a Ctrl-C the kernel gave a worker thread is handled here within one.
        wait_all(futures)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    for error in (f.exception() for f in futures):
        if error is not None:
            raise error
    return [f.result() for f in futures]


class Stack:
    def __init__(
        self, project: Project, run: Run, binaries: Mapping[str, Binary], *, lanes: int = 1
    ) -> None:
        self.project = project
        self.run = run
        self.levels = start_order(project.config)
        config = project.config
        self.ctx = StackContext(
            root=project.root,
            python=project.python,
            exports=lambda name, values: service_exports(name, config.services[name], values),
            run_dir=run.run_dir,
            supervisor=run.supervisor,
            run_as=unprivileged_user() if _needs_run_as(project) else None,
            binaries=binaries,
            lanes=lanes,
        )
        self.services: dict[str, Service] = {
            name: KINDS[spec.kind].runtime(name, spec, self.ctx, KINDS[spec.kind])
            for name, spec in config.services.items()
        }
        self.namespaces: list[LaneNamespace] = []

    def start(self) -> None:
        for level in self.levels:
            in_parallel([self.services[name].start for name in level])

    def provision(self, lane: int) -> LaneSetup:
        views: dict[str, ServiceView] = {}
        config = self.project.config
        namespace = self._namespace(lane) if config.network == "namespace" else None
        for level in self.levels:

            def task(name: str) -> Callable[[], ServiceView]:
                deps = {d: views[d] for d in config.services[name].depends_on}

                def provision() -> ServiceView:
                    def work() -> ServiceView:
                        with self.ctx.for_lane(lane):
                            return self.services[name].provision(lane, deps)

                    # In the lane's network: the servers it starts (children inherit it),
                    # their readiness checks and its own connections live there.
                    return work() if namespace is None else namespace.call(work)

                return provision

            for view in in_parallel([task(name) for name in level]):
                views[view.name] = view
        return LaneSetup(lane, views, self._lane_env(lane, views), namespace)

    def release(self, lane: int) -> None:
        """Stop what only `lane` used (its servers, its namespace) and remove their folders:
        a lane whose tests are done, before rechecks take fresh ones."""
        self.ctx.release(lane)
        for namespace in [ns for ns in self.namespaces if ns.lane == lane]:
            namespace.stop(self.run.supervisor)
            self.namespaces.remove(namespace)
        for name in self.services:
            shutil.rmtree(self.run.run_dir.path / name / f"lane{lane}", ignore_errors=True)

    def recycle(self, lane: int) -> None:
        """Release `lane` and undo what it made on shared servers (its database, its DB
        number): the lane number can then be provisioned afresh."""
        self.release(lane)
        for level in reversed(self.levels):
            for name in level:
                self.services[name].forget(lane)

    def _namespace(self, lane: int) -> LaneNamespace:
        folder = private_dir(private_dir(self.run.run_dir.path / "namespaces") / str(lane))
        namespace = start_namespace(self.run.supervisor, folder, lane)
        self.namespaces.append(namespace)
        return namespace

    def _lane_env(self, lane: int, views: Mapping[str, ServiceView]) -> dict[str, str]:
        return lane_environment(
            self.project, views, self.ctx.common_values(lane), lanes=self.ctx.lanes
        )

    def expand_args(self, args: Sequence[str], lane: LaneSetup) -> list[str]:
        return expand_lane_args(args, lane, self.ctx.common_values(lane.lane))

    def dead(self) -> list[Handle]:
        """Servers (processes or containers) that ended although nobody stopped them."""
        return self.ctx.dead()

    def problem(self) -> ServiceProblem | None:
        """A server that exited although nobody stopped it: named, with its status and log."""
        for handle in self.dead():
            return problem_of(handle)
        return None

    def handles(self) -> list[Handle]:
        """Every server the stack runs now."""
        return self.ctx.handles()

    def lane_of(self, handle: Handle) -> int | None:
        """The lane a server was started for; None for a server the lanes share."""
        return self.ctx.lane_of(handle)

    def stop(self) -> None:
        """Processes first (a test app still connected would keep an external database from
        being dropped), then what services made on servers, then containers. Every step runs
        whatever an earlier one raised; the first error is raised at the end."""
        errors: list[BaseException] = []

        def attempt(step: Callable[[], None]) -> None:
            try:
                step()
            except Exception as exc:
                errors.append(exc)

        self.ctx.close()
        attempt(self.run.supervisor.stop_all)
        for namespace in self.namespaces:
            namespace.close()
        for level in reversed(self.levels):
            for name in level:
                attempt(self.services[name].stop)
        attempt(self.ctx.stop_backends)
        if errors:
            raise errors[0]


def lane_environment(
    project: Project, views: Mapping[str, ServiceView], common: Mapping[str, str], *, lanes: int
) -> dict[str, str]:
    """A lane's env vars: each service's exports, the `env` table, and TESTFLEET_*; from its
    views and the placeholders of the run it belongs to (`common`: {lane}, {run_id}, ...)."""
    config = project.config
    everything = {name: view.values for name, view in views.items()}
    env: dict[str, str] = {}
    for name, view in views.items():
        values = placeholder_values(view.values, everything, common)
        env.update(service_exports(name, config.services[name], values))
    values = placeholder_values(None, everything, common)
    env.update({k: expand(v, values, where=f"{TABLE}.env.{k}") for k, v in config.env.items()})
    env.update(
        {
            "TESTFLEET_RUN_ID": common["run_id"],
            "TESTFLEET_LANE": common["lane"],
            # Not TESTFLEET_LANES: that is the lanes option of every testfleet started where
            # this env is (a shell that sourced an up's env file, a test that runs testfleet).
            LANE_COUNT: str(lanes),
            "TESTFLEET_SERVICES": json.dumps(everything, sort_keys=True),
        }
    )
    return env


def service_exports(name: str, spec: ServiceSpec, values: Mapping[str, str]) -> dict[str, str]:
    """The variables `name` exports with these values: its defaults unless
    `export-defaults = false`, then its `export` table."""
    templates = KINDS[spec.kind].exports_for(name) if spec.export_defaults else {}
    templates.update(spec.export)
    where = f"{TABLE}.services.{name}.export"
    return {var: expand(t, values, where=f"{where}.{var}") for var, t in templates.items()}


def problem_of(handle: Handle) -> ServiceProblem:
    code = handle.exit_code()
    assert code is not None
    tail = handle.tail()
    # A native server's data is in the run directory: a full one is the user's to make room in.
    hint = full_hint(tail, handle.log_path) if isinstance(handle, ManagedProcess) else ""
    return ServiceProblem(
        f"service {handle.name} exited unexpectedly ({describe_exit(code)}){hint}",
        handle.keep_log(),
        tail,
    )


def expand_lane_args(args: Sequence[str], lane: LaneSetup, common: Mapping[str, str]) -> list[str]:
    """pytest-args with the lane's placeholders filled: its services' values, `{lane}`, ..."""
    everything = {name: view.values for name, view in lane.views.items()}
    values = placeholder_values(None, everything, common)
    return [expand(a, values, where=f"{TABLE}.pytest-args") for a in args]


def _needs_run_as(project: Project) -> bool:
    return any(
        KINDS[spec.kind].unprivileged and spec.backend_name == "native"
        for spec in project.config.services.values()
    )
