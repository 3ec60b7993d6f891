"""Fixtures read the services from the env testfleet exports (POSTGRES_URL, VALKEY_URL,
NATS_URL, VAULT_ADDR/VAULT_TOKEN, BOOKSHOP_API_URL). Many tests reset shared state first
(TRUNCATE, FLUSHDB, a purged stream) and then count: correct alone, wrong when another
process uses the same service at the same time. testfleet gives every lane its own."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import psycopg
import pytest
import redis
from bookshop import events
from bookshop import vault as vault_store


@pytest.fixture
def db() -> Iterator[psycopg.Connection]:
    with psycopg.connect(os.environ["POSTGRES_URL"], autocommit=True) as conn:
        conn.execute("TRUNCATE order_lines, orders, books RESTART IDENTITY CASCADE")
        yield conn


@pytest.fixture
def cache_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(os.environ["VALKEY_URL"])
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def nats_url() -> str:
    url = os.environ["NATS_URL"]
    asyncio.run(events.ensure_stream(url))
    asyncio.run(events.purge(url))
    return url


@pytest.fixture
def vault():  # type: ignore[no-untyped-def]
    client = vault_store.client(os.environ["VAULT_ADDR"], os.environ["VAULT_TOKEN"])
    vault_store.remove_all(client)
    return client


@pytest.fixture
def api_url() -> str:
    return os.environ["BOOKSHOP_API_URL"]


def seed(conn: psycopg.Connection) -> None:
    from bookshop.catalog import add_book

    add_book(conn, "978-0", "Dune", "Herbert", 1299, stock=5)
    add_book(conn, "978-1", "Emma", "Austen", 899, stock=2)
    add_book(conn, "978-2", "Persuasion", "Austen", 999, stock=0)
