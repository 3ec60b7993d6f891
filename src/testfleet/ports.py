"""Loopback ports that no other run on this machine is using right now."""

from __future__ import annotations

import socket
import threading

# Every server of ours listens here only: the machine's network never reaches a test's data.
HOST = "127.0.0.1"

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A port the kernel just reported free, never the same one twice in this process.

    Another process can still take it before our server binds; servers retry on a new port
    when they report the address in use.
    """
    with _lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def address_in_use(log_text: str) -> bool:
    text = log_text.lower()
    return "address already in use" in text or "address in use" in text
