"""The lane <-> coordinator protocol: JSON objects, one per line, over a unix socket.

lane -> coordinator: hello {lane, pid}; collected {nodeids}; collect_error {nodeid, text};
next; start {nodeid}; result {TestResult fields: nodeid, outcome, duration, message, text,
output, and for a failing test file and line}; stopping {reason}
coordinator -> lane: unit {nodeids}; done
"""

from __future__ import annotations

import json
import socket
from typing import Any

Message = dict[str, Any]


def send(sock: socket.socket, message: Message) -> None:
    sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")


class LineReader:
    """Splits a byte stream into messages; keeps a partial line for the next chunk."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line]


def receive(sock: socket.socket, reader: LineReader, pending: list[Message]) -> Message | None:
    """Block until one message arrives; None when the peer closed the connection."""
    while not pending:
        data = sock.recv(65536)
        if not data:
            return None
        pending.extend(reader.feed(data))
    return pending.pop(0)
