"""A read-through cache of book lookups in Valkey."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict

import redis

from bookshop.catalog import Book

TTL_SECONDS = 300


class BookCache:
    def __init__(self, client: redis.Redis, prefix: str = "book:") -> None:
        self.client = client
        self.prefix = prefix
        self.hits = 0
        self.misses = 0

    def get(self, isbn: str, load: Callable[[str], Book | None]) -> Book | None:
        cached = self.client.get(self.prefix + isbn)
        if cached is not None:
            self.hits += 1
            return Book(**json.loads(cached))
        self.misses += 1
        book = load(isbn)
        if book is not None:
            self.client.set(self.prefix + isbn, json.dumps(asdict(book)), ex=TTL_SECONDS)
        return book

    def invalidate(self, isbn: str) -> None:
        self.client.delete(self.prefix + isbn)

    def size(self) -> int:
        return sum(1 for _ in self.client.scan_iter(match=self.prefix + "*"))
