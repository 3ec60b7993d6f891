"""`testfleet up`: start the stack, print the developer's lane's env and write it to the env
file, keep lanes warm for `testfleet run`, serve them until Ctrl-C or SIGTERM, tear down."""

from __future__ import annotations

import argparse
import shlex
import sys

from testfleet.commands import Call
from testfleet.commands.common import logs_dir, project_for, run_base, start_stack
from testfleet.config_rules import check_lanes, namespace_hint_for
from testfleet.console import say
from testfleet.errors import ConfigError
from testfleet.lanes.count import resolve_lanes
from testfleet.options import UP, add_options
from testfleet.preflight import check_paths
from testfleet.project import Project
from testfleet.reaper import remove_if_ours
from testfleet.runtime import Run, teardown_shield
from testfleet.stack import Stack, resolve_binaries
from testfleet.up.dotenv import dotenv_lock, for_shells, write_dotenv
from testfleet.up.identity import descriptor_path, not_shareable
from testfleet.up.server import DEV_LANE, UpServer

# How often the up looks for servers that died, between answering runs.
WATCH_INTERVAL_SECONDS = 0.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, UP)


def main(call: Call) -> int:
    project = project_for(call, UP)
    # Everything a user can get wrong is found here, before anything starts.
    check_paths(project, UP)
    check_lanes(project.config, project.config.versions, namespace_hint=namespace_hint(project))
    warm, refusal = warm_lanes(project)
    serve(project, warm, refusal)
    return 0  # serve returns only by an exception (Ctrl-C, SIGTERM, a dead server)


def warm_lanes(project: Project) -> tuple[int, str | None]:
    """How many lanes `up` keeps warm for runs (-n/lanes, within what the services allow
    beside the developer's lane), or 0 and why no run can share the stack."""
    why = not_shareable(project)
    if why is not None:
        return 0, why
    warm = resolve_lanes(project.config)
    while True:
        try:
            check_lanes(
                project.config, DEV_LANE + max(warm, 1), namespace_hint=namespace_hint(project)
            )
        except ConfigError as exc:
            if warm <= 1:
                return 0, exc.message
            warm -= 1
            continue
        return warm, None


def namespace_hint(project: Project) -> str:
    """How this up's user gives lanes namespaces: under `--network shared` with the file's
    network = "namespace", by dropping that option, not by adding what the file has."""
    return namespace_hint_for(project.config, project.sources, project.table)


def serve(project: Project, warm: int, refusal: str | None) -> None:
    binaries = resolve_binaries(project)
    dotenv = project.path(project.config.dotenv)
    with (
        dotenv_lock(dotenv),
        Run(
            run_base(project, DEV_LANE + warm),
            keep_logs=logs_dir(project),
            owned_files=(dotenv, descriptor_path(project)),
        ) as run,
    ):
        stack = Stack(project, run, binaries, lanes=DEV_LANE + warm)
        server: UpServer | None = None
        try:
            (lane,) = start_stack(project, run, stack, 1)
            env = for_shells(lane.env)
            for key, value in env.items():
                print(f"export {key}={shlex.quote(value)}")
            sys.stdout.flush()
            write_dotenv(dotenv, env)
            server = UpServer(project, stack, warm=warm, shareable=refusal)
            server.warm_up()
            server.publish()
            if refusal is None:
                say(f"`testfleet run` in this project uses this stack ({warm} lane(s) kept warm)")
            else:
                say(f"`testfleet run` starts its own stack: {refusal}")
            say(f"env written to {dotenv}; Ctrl-C stops the stack")
            while True:
                server.serve(WATCH_INTERVAL_SECONDS)
        finally:
            # A second Ctrl-C must not cut this short: a worker halfway through stopping a
            # lane's server would leave it running.
            with teardown_shield():
                if server is not None:
                    server.close()
                try:
                    stack.stop()
                finally:
                    if server is not None:
                        server.join_workers()
                    remove_if_ours(dotenv, run.run_dir.run_id)
