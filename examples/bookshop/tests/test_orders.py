import time

import pytest
from bookshop import catalog

from tests.conftest import seed


def test_order_takes_stock(db):
    seed(db)
    catalog.place_order(db, "ada", {"978-0": 2})
    book = catalog.get_book(db, "978-0")
    assert book is not None
    assert book.stock == 3


def test_order_total(db):
    seed(db)
    order_id = catalog.place_order(db, "ada", {"978-0": 1, "978-1": 2})
    assert catalog.order_total(db, order_id) == 1299 + 2 * 899


def test_out_of_stock_rolls_back_whole_order(db):
    seed(db)
    with pytest.raises(catalog.OutOfStock):
        catalog.place_order(db, "bob", {"978-0": 1, "978-2": 1})
    book = catalog.get_book(db, "978-0")
    assert book is not None
    assert book.stock == 5
    assert db.execute("SELECT count(*) FROM orders").fetchone() == (0,)


def test_first_order_is_number_one(db):
    seed(db)
    assert catalog.place_order(db, "cy", {"978-1": 1}) == 1


def test_revenue_by_author(db):
    seed(db)
    catalog.place_order(db, "ada", {"978-0": 1})
    catalog.place_order(db, "bob", {"978-1": 2})
    time.sleep(0.05)
    assert catalog.revenue_by_author(db) == {"Austen": 1798, "Herbert": 1299}


def test_order_count(db):
    """Counts every order in the table: other writers' orders break it."""
    seed(db)
    for customer in ("a", "b", "c"):
        catalog.place_order(db, customer, {"978-0": 1})
    time.sleep(0.05)
    assert db.execute("SELECT count(*) FROM orders").fetchone() == (3,)


def test_concurrent_orders_cannot_oversell(db):
    seed(db)
    catalog.place_order(db, "a", {"978-1": 2})
    with pytest.raises(catalog.OutOfStock):
        catalog.place_order(db, "b", {"978-1": 1})
