"""Books and orders in PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Book:
    id: int
    isbn: str
    title: str
    author: str
    price_cents: int
    stock: int


class OutOfStock(Exception):
    pass


_BOOK_COLUMNS = "id, isbn, title, author, price_cents, stock"


def add_book(
    conn: psycopg.Connection,
    isbn: str,
    title: str,
    author: str,
    price_cents: int,
    *,
    stock: int = 0,
) -> Book:
    row = conn.execute(
        f"INSERT INTO books (isbn, title, author, price_cents, stock) VALUES (%s, %s, %s, %s, %s)"
        f" RETURNING {_BOOK_COLUMNS}",
        (isbn, title, author, price_cents, stock),
    ).fetchone()
    assert row is not None
    return Book(*row)


def get_book(conn: psycopg.Connection, isbn: str) -> Book | None:
    row = conn.execute(f"SELECT {_BOOK_COLUMNS} FROM books WHERE isbn = %s", (isbn,)).fetchone()
    return Book(*row) if row else None


def list_books(conn: psycopg.Connection, author: str | None = None) -> list[Book]:
    if author is None:
        rows = conn.execute(f"SELECT {_BOOK_COLUMNS} FROM books ORDER BY title").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_BOOK_COLUMNS} FROM books WHERE author = %s ORDER BY title", (author,)
        ).fetchall()
    return [Book(*row) for row in rows]


def count_books(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM books").fetchone()
    return int(row[0]) if row else 0


def place_order(conn: psycopg.Connection, customer: str, lines: dict[str, int]) -> int:
    """Take stock for every line in one transaction; all or nothing."""
    with conn.transaction():
        order = conn.execute(
            "INSERT INTO orders (customer) VALUES (%s) RETURNING id", (customer,)
        ).fetchone()
        assert order is not None
        for isbn, quantity in sorted(lines.items()):
            row = conn.execute(
                "UPDATE books SET stock = stock - %s WHERE isbn = %s AND stock >= %s"
                " RETURNING id, price_cents",
                (quantity, isbn, quantity),
            ).fetchone()
            if row is None:
                raise OutOfStock(isbn)
            conn.execute(
                "INSERT INTO order_lines (order_id, book_id, quantity, price_cents)"
                " VALUES (%s, %s, %s, %s)",
                (order[0], row[0], quantity, row[1]),
            )
        return int(order[0])


def order_total(conn: psycopg.Connection, order_id: int) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(quantity * price_cents), 0) FROM order_lines WHERE order_id = %s",
        (order_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def revenue_by_author(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT b.author, sum(l.quantity * l.price_cents) FROM order_lines l"
        " JOIN books b ON b.id = l.book_id GROUP BY b.author ORDER BY b.author"
    ).fetchall()
    return {author: int(total) for author, total in rows}
