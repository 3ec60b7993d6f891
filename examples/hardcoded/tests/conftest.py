"""Written the way many suites are: no settings, every address hard-coded. Correct alone;
under any parallel runner on one machine, lanes flush each other's Valkey and fight over
port 8765."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
import redis

PORT = 8765  # the app's port in the docs; its tests start it there


@pytest.fixture
def cache() -> Iterator[redis.Redis]:
    client = redis.Redis()  # localhost:6379
    client.flushdb()
    yield client
    client.close()


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the stdlib calls it by this name
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app_server() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", PORT), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{PORT}"
    server.shutdown()
    server.server_close()
