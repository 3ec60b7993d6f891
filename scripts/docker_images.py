"""Build small local Docker images of the services testfleet runs, from binaries on this machine.

Kept for scripts that call it: the builder is part of the package now (`testfleet.images`), and
`testfleet images build [KIND ...] [--force]` is the command.

    python scripts/docker_images.py [--only KIND ...] [--force]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from testfleet.cli import main as testfleet
from testfleet.images.build import BuildError, Result, build, build_images
from testfleet.images.recipes import IMAGE_TAGS

__all__ = ["IMAGE_TAGS", "BuildError", "Result", "build", "build_images", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    force = "--force" in words
    kinds = [word for word in words if word not in ("--only", "--force")]
    return testfleet(["images", "build", *kinds, *(["--force"] if force else [])])


if __name__ == "__main__":
    sys.exit(main())
