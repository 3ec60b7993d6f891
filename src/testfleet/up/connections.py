"""The up's connections and their bounds: what one connection may cost the up, and taking new
ones without spinning when the up is out of file descriptors.

A run holds one connection for as long as it runs, quiet between its requests; each request
is one short line, sent whole. So a line is bounded (a run's hello, its stack identity, is
the longest: a few kB), a connection must say hello soon after it opens and finish a line it
began soon after, sends to a run that does not read give up after a while, and the number of
connections is bounded. What breaks a bound is dropped with one line saying why; the up
serves the others on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from testfleet.console import say
from testfleet.protocol import LineReader, Message, send
from testfleet.up.lane_processes import peer_pid

# A hello carries the stack's identity (services, env table): kB. 1 MiB leaves room for the
# largest config and still bounds what one connection can make the up hold.
MAX_LINE_BYTES = 1 << 20
# One connection a run: far more runs than one machine runs against one up at once, and far
# fewer descriptors than the up's limit (its servers and logs need theirs).
MAX_CONNECTIONS = 64
# A run sends hello as it connects, and each message in one write: a connection that has not
# said hello, or has sent part of a line, this long after is stuck or not a run.
MESSAGE_SECONDS = 5.0
# A run reads the up's answers as they come; one that does not for this long is dropped
# rather than let block the up.
SEND_SECONDS = 5.0
# Out of file descriptors, the up turns new connections away for a pause, doubled while it
# lasts: no spinning on accept, and it tries again soon after descriptors are free.
FIRST_PAUSE_SECONDS = 0.1
MAX_PAUSE_SECONDS = 2.0
BACKLOG = 16


@dataclass(eq=False)  # a connection is itself, whatever it holds
class Client:
    conn: socket.socket
    peer: int = 0  # the run's process, as the kernel saw it connect
    reader: LineReader = field(default_factory=lambda: LineReader(MAX_LINE_BYTES))
    lanes: dict[int, int] = field(default_factory=dict)  # the run's lane -> ours
    pids: dict[tuple[int, int], None] = field(default_factory=dict)  # its lane processes
    welcomed: bool = False
    reserved: int = 0  # lanes set aside for it at hello
    opened: float = field(default_factory=time.monotonic)
    partial_since: float | None = None  # when the line it is sending began
    # A send to it failed: it is dropped, saying why when it is more than a run gone.
    failed: str | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def tell(self, message: Message) -> None:
        with self.send_lock:
            if self.failed is not None:
                return  # each send would wait its time again
            try:
                send(self.conn, message)
            except TimeoutError:
                self.failed = f"it read nothing the up sent for {SEND_SECONDS:.0f} s"
            except OSError:
                self.failed = ""

    def heard(self, now: float) -> None:
        """After a read: when the line it is in the middle of began, if it is."""
        if not self.reader.partial:
            self.partial_since = None
        elif self.partial_since is None:
            self.partial_since = now

    def overdue(self, now: float) -> str | None:
        """Why it has taken too long, or None."""
        if self.partial_since is not None and now - self.partial_since > MESSAGE_SECONDS:
            return f"no whole message within {MESSAGE_SECONDS:.0f} s"
        if not self.welcomed and now - self.opened > MESSAGE_SECONDS:
            return f"not welcomed within {MESSAGE_SECONDS:.0f} s"
        return None


def open_client(conn: socket.socket) -> Client:
    """A connection just taken: sends bounded in time (reads are only made when readable)."""
    conn.settimeout(SEND_SECONDS)
    return Client(conn, peer=peer_pid(conn))


def turn_away(conn: socket.socket, why: str) -> None:
    """Tell a connection no, if it can hear it at once, and close it."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        send(conn, {"type": "refused", "why": why})
    conn.close()


class Doorway:
    """The listening socket, registered with the selector while the up takes connections."""

    def __init__(self, path: Path, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(BACKLOG)
        self.listener.setblocking(False)
        selector.register(self.listener, selectors.EVENT_READ)
        self.paused_until: float | None = None
        self.pause = FIRST_PAUSE_SECONDS
        # Kept to be given up when the up is out of descriptors: with it, waiting
        # connections can be taken and closed (their runs hear no at once).
        self.spare = _spare()

    def accept(self, now: float) -> socket.socket | None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            if exc.errno not in (errno.ECONNABORTED, errno.EPROTO):  # else: that one is gone
                self._pause(now, exc)
            return None
        self.pause = FIRST_PAUSE_SECONDS
        return conn

    def _pause(self, now: float, exc: OSError) -> None:
        """The listener stays readable while what waits cannot be taken: it is left out of
        the selector for a while, or the up would spin."""
        if self.pause == FIRST_PAUSE_SECONDS:
            lacking = exc.errno in (errno.EMFILE, errno.ENFILE)
            say(
                ("out of file descriptors" if lacking else "cannot take connections")
                + f" ({exc.strerror}): new runs are turned away until that passes; the runs"
                " connected are served"
            )
        self._shed()
        self.selector.unregister(self.listener)
        self.paused_until = now + self.pause
        self.pause = min(self.pause * 2, MAX_PAUSE_SECONDS)

    def _shed(self) -> None:
        """Take and close what waits (using the spare descriptor to do it)."""
        if self.spare is None:
            return
        os.close(self.spare)
        self.spare = None
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                conn.close()
        self.spare = _spare()

    def resume(self, now: float) -> None:
        """After a pause: take connections again."""
        if self.paused_until is not None and now >= self.paused_until:
            self.paused_until = None
            self.selector.register(self.listener, selectors.EVENT_READ)
            if self.spare is None:
                self.spare = _spare()

    def close(self) -> None:
        self.listener.close()
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None


def _spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
