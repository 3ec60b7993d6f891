import time

import psycopg
import pytest
from bookshop import catalog

from tests.conftest import seed


def test_add_and_count(db):
    """Exactly the three seeded books exist: another writer on the same database breaks it."""
    seed(db)
    time.sleep(0.05)  # stands for the app's own work between writes and reads
    assert catalog.count_books(db) == 3


def test_first_book_gets_id_one(db):
    """Sequences restart with TRUNCATE ... RESTART IDENTITY; a shared database moves them."""
    book = catalog.add_book(db, "978-9", "Ulysses", "Joyce", 1599)
    assert book.id == 1


def test_list_books_sorted_by_title(db):
    seed(db)
    assert [b.title for b in catalog.list_books(db)] == ["Dune", "Emma", "Persuasion"]


def test_list_books_by_author(db):
    seed(db)
    assert [b.isbn for b in catalog.list_books(db, author="Austen")] == ["978-1", "978-2"]


def test_get_missing_book(db):
    assert catalog.get_book(db, "nope") is None


def test_isbn_is_unique(db):
    catalog.add_book(db, "978-5", "A", "B", 100)
    with pytest.raises(psycopg.errors.UniqueViolation):
        catalog.add_book(db, "978-5", "C", "D", 100)


def test_negative_price_rejected(db):
    with pytest.raises(psycopg.errors.CheckViolation):
        catalog.add_book(db, "978-6", "Cheap", "Nobody", -1)


def test_schema_came_from_the_template(db):
    """The setup command ran once on the template; every lane database is a copy of it."""
    versions = db.execute("SELECT count(*) FROM schema_version").fetchone()
    assert versions == (3,)


def test_empty_catalog_after_reset(db):
    time.sleep(0.05)
    assert catalog.list_books(db) == []
