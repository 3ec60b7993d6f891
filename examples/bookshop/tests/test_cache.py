import time

from bookshop import catalog
from bookshop.cache import BookCache

from tests.conftest import seed


def test_miss_then_hit(db, cache_client):
    seed(db)
    cache = BookCache(cache_client)
    assert cache.get("978-0", lambda i: catalog.get_book(db, i)).title == "Dune"
    assert cache.get("978-0", lambda i: catalog.get_book(db, i)).title == "Dune"
    assert (cache.hits, cache.misses) == (1, 1)


def test_missing_book_not_cached(db, cache_client):
    cache = BookCache(cache_client)
    assert cache.get("nope", lambda i: catalog.get_book(db, i)) is None
    assert cache.size() == 0


def test_invalidate(db, cache_client):
    seed(db)
    cache = BookCache(cache_client)
    cache.get("978-1", lambda i: catalog.get_book(db, i))
    cache.invalidate("978-1")
    assert cache.size() == 0


def test_dbsize_after_flush(cache_client):
    """FLUSHDB, write three keys, expect three: any other client of this DB breaks it."""
    for key in ("a", "b", "c"):
        cache_client.set(key, "1")
    time.sleep(0.05)
    assert cache_client.dbsize() == 3


def test_ttl_is_set(db, cache_client):
    seed(db)
    cache = BookCache(cache_client)
    cache.get("978-0", lambda i: catalog.get_book(db, i))
    assert 0 < cache_client.ttl("book:978-0") <= 300


def test_counter_starts_at_one(cache_client):
    """INCR on a fixed key name: shared servers hand out someone else's numbers."""
    time.sleep(0.05)
    assert cache_client.incr("orders:next-id") == 1
