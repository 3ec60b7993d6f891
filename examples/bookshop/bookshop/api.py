"""The bookshop's HTTP API (JSON over http.server), run by testfleet as a `command` service.

python -m bookshop.api --port 8080    # DATABASE_URL and CACHE_URL from the environment
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import redis

from bookshop import catalog
from bookshop.cache import BookCache


class Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json(200, {"status": "ok"})
        elif self.path == "/books":
            with psycopg.connect(self.server.database_url) as conn:
                books = catalog.list_books(conn)
            self._json(200, [asdict(b) for b in books])
        elif self.path.startswith("/books/"):
            isbn = self.path.removeprefix("/books/")
            with psycopg.connect(self.server.database_url) as conn:
                book = self.server.cache.get(isbn, lambda i: catalog.get_book(conn, i))
            if book is None:
                self._json(404, {"error": f"no book {isbn}"})
            else:
                self._json(200, asdict(book))
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/orders":
            self._json(404, {"error": "not found"})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            with psycopg.connect(self.server.database_url) as conn:
                order_id = catalog.place_order(conn, body["customer"], body["lines"])
                total = catalog.order_total(conn, order_id)
        except catalog.OutOfStock as exc:
            self._json(409, {"error": f"out of stock: {exc}"})
            return
        for isbn in body["lines"]:
            self.server.cache.invalidate(isbn)
        self._json(201, {"order_id": order_id, "total_cents": total})

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests read the API, not its access log


class ApiServer(ThreadingHTTPServer):
    def __init__(self, port: int, database_url: str, cache_url: str) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.database_url = database_url
        self.cache = BookCache(redis.Redis.from_url(cache_url), prefix="api:book:")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ApiServer(args.port, os.environ["DATABASE_URL"], os.environ["CACHE_URL"])
    print(f"bookshop api listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
