"""What a run made on external servers (databases, Vault mounts), written down before it is
made, so that when the run cannot clean up itself (SIGKILL, a crash) its reaper or the next
run drops it. A normal teardown drops it through the services and removes the record with
the run directory.

One JSON object per line in the run directory's private `external` file:
`{"kind": "postgres", "url": ..., "name": ...}`; the url carries the credentials the run used
(the file is the run's, mode 600, like everything else in the run directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from testfleet.files import open_private

FILE_NAME = "external"
SECONDS = 10


def record(run_dir: Path, kind: str, url: str, name: str, **extra: str) -> None:
    entry = {"kind": kind, "url": url, "name": name, **extra}
    fd = open_private(run_dir / FILE_NAME)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def clean(run_dir: Path) -> int:
    """Drop everything recorded in `run_dir`; returns how many entries were tried."""
    path = run_dir / FILE_NAME
    if path.is_symlink() or not path.is_file():
        return 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    tried = 0
    for line in reversed(lines):
        with contextlib.suppress(Exception):  # a server gone, a driver missing: go on
            entry = json.loads(line)
            tried += 1
            DROPPERS[entry["kind"]](entry)
    return tried


def _postgres(entry: dict[str, Any]) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(entry["url"], autocommit=True, connect_timeout=SECONDS) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (entry["name"],),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(entry["name"])))


def _vault(entry: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{entry['url']}/v1/sys/mounts/{entry['name']}",
        method="DELETE",
        headers={"X-Vault-Token": entry["token"]},
    )
    with urllib.request.urlopen(request, timeout=SECONDS):
        pass


def _mongodb(entry: dict[str, Any]) -> None:
    from pymongo import MongoClient

    ms = SECONDS * 1000
    client: MongoClient[dict[str, Any]] = MongoClient(entry["url"], serverSelectionTimeoutMS=ms)
    with client:
        client.drop_database(entry["name"])


def _neo4j(entry: dict[str, Any]) -> None:
    from neo4j import GraphDatabase

    auth = (entry["user"], entry["password"]) if entry.get("password") else None
    with (
        GraphDatabase.driver(entry["url"], auth=auth) as driver,
        driver.session(database="system") as session,
    ):
        session.run(f"DROP DATABASE `{entry['name']}` IF EXISTS").consume()


DROPPERS = {"postgres": _postgres, "vault": _vault, "mongodb": _mongodb, "neo4j": _neo4j}
