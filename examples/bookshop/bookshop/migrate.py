"""Schema migrations, applied in order; testfleet runs this once against its template database."""

from __future__ import annotations

import os

import psycopg

MIGRATIONS = [
    """
    CREATE TABLE books (
        id serial PRIMARY KEY,
        isbn text UNIQUE NOT NULL,
        title text NOT NULL,
        author text NOT NULL,
        price_cents integer NOT NULL CHECK (price_cents >= 0),
        stock integer NOT NULL DEFAULT 0 CHECK (stock >= 0)
    )
    """,
    """
    CREATE TABLE orders (
        id serial PRIMARY KEY,
        customer text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE order_lines (
        order_id integer NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
        book_id integer NOT NULL REFERENCES books(id),
        quantity integer NOT NULL CHECK (quantity > 0),
        price_cents integer NOT NULL,
        PRIMARY KEY (order_id, book_id)
    )
    """,
    "CREATE INDEX books_author ON books (author)",
]


def migrate(url: str) -> int:
    """Apply pending migrations; returns how many ran."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] if row and row[0] is not None else 0
        for version, statement in enumerate(MIGRATIONS[current:], start=current + 1):
            with conn.transaction():
                conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
        return len(MIGRATIONS) - current


if __name__ == "__main__":
    ran = migrate(os.environ.get("DATABASE_URL") or os.environ["POSTGRES_URL"])
    print(f"applied {ran} migration(s)")
