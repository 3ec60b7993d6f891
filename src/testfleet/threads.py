"""Waiting on worker threads from the main thread without going deaf to Ctrl-C and SIGTERM.

CPython runs signal handlers in the main thread only, and the kernel may deliver a signal sent
to the process to any of its threads. When a worker gets it, a main thread blocked in a lock
acquire without a timeout (as `Future.result()`, `Future.exception()` and
`concurrent.futures.wait()` without a timeout are) is not woken, and the handler waits for the
workers to end. Waiting in short slices returns to Python code often, where the handler runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future, wait
from typing import Any

# How late a signal a worker thread received is handled, at most (plus a GIL switch).
SLICE = 0.05


def wait_all(futures: Iterable[Future[Any]], timeout: float | None = None) -> bool:
    """Wait until every future is done, or `timeout` seconds passed; True when all are done.

    A signal's handler runs within a slice whichever thread the signal went to, and its
    exception (KeyboardInterrupt, or SIGTERM's) propagates from here.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = set(futures)
    while pending:
        left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
        if left <= 0:
            return False
        pending = wait(pending, timeout=left).not_done
    return True
