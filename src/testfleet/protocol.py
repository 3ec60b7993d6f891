"""The lane <-> coordinator protocol: JSON objects, one per line, over a unix socket.

lane -> coordinator: hello {lane, pid}; collected {nodeids: the whole collection, its
modules that skipped themselves as their own node ids; files: the test files this lane
imported; import_seconds: how long each it collected took}; collect_error {nodeid, text};
next; start {nodeid}; result {TestResult fields: nodeid, outcome, duration, message, text,
output (whole, up to the lane's bound), and for a failing test file and line}; stopping
{reason}
coordinator -> lane: unit {nodeids}; wait (ask again shortly: another lane, which imported
their files, takes the units left sooner than this one would import them); done

The up and its runs speak it too (up/server.py). The up reads with a bounded `LineReader`:
what a run sends is never trusted to end.
"""

from __future__ import annotations

import json
import socket
from typing import Any

Message = dict[str, Any]


def send(sock: socket.socket, message: Message) -> None:
    sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")


class LineTooLong(ValueError):
    """A line past the reader's limit: the peer is dropped, its line never held whole."""


class LineReader:
    """Splits a byte stream into messages; keeps a partial line for the next chunk.

    `limit`: the most bytes a line may have (None: no limit, as between a run and its own
    lanes, whose results carry whatever output a test printed)."""

    def __init__(self, limit: int | None = None) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[Message]:
        # Only the new bytes are searched: a long line arriving in many chunks costs its
        # length once, not its length per chunk.
        searched = len(self._buffer)
        self._buffer += data
        end = self._buffer.rfind(b"\n", searched)
        lines = bytes(self._buffer[:end]).split(b"\n") if end >= 0 else []
        if end >= 0:
            del self._buffer[: end + 1]
        if self._limit is not None:
            longest = max([len(self._buffer), *map(len, lines)])
            if longest > self._limit:
                self._buffer.clear()
                raise LineTooLong(f"a line longer than {self._limit} bytes")
        return [message(line) for line in lines if line]

    @property
    def partial(self) -> bool:
        """Whether part of a line has come and its end not yet."""
        return bool(self._buffer)


def message(line: bytes) -> Message:
    """One line as a message: a JSON object with a string `type` (else ValueError)."""
    decoded = json.loads(line)
    if not isinstance(decoded, dict) or not isinstance(decoded.get("type"), str):
        raise ValueError("a message is a JSON object with a string type")
    return decoded


def whole_number(value: object, what: str, *, least: int = 0) -> int:
    """`value` when it is an int of at least `least` (JSON's true is no number here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{what} is {value!r}, not a whole number of at least {least}")
    return value


def receive(sock: socket.socket, reader: LineReader, pending: list[Message]) -> Message | None:
    """Block until one message arrives; None when the peer closed the connection."""
    while not pending:
        data = sock.recv(65536)
        if not data:
            return None
        pending.extend(reader.feed(data))
    return pending.pop(0)
