"""What lanes find in their environment by default: each service's own URL, never variables
that change a client library's defaults for every connection (libpq's PG*, REDIS_URL for a
Valkey service) unless the config asks for them in one line; a suite that connects the way
libpq does by default is told which line that is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli, write_pyproject

pytestmark = pytest.mark.e2e

LIBPQ = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")

SUITE = f"""
import os

import psycopg

LIBPQ = {LIBPQ!r}


def test_environment():
    assert os.environ["POSTGRES_URL"].startswith("postgresql://")
    assert os.environ["VALKEY_URL"].startswith("redis://")
    asked = os.environ["ASKED"] == "1"
    assert [name in os.environ for name in LIBPQ] == [asked] * len(LIBPQ)
    assert ("REDIS_URL" in os.environ) == asked


def test_connects_as_libpq_does_by_default():
    with psycopg.connect("", connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (
            psycopg.conninfo.conninfo_to_dict(os.environ["POSTGRES_URL"])["dbname"],
        )
"""


def project(root: Path, postgres: str, valkey: str) -> Path:
    write_pyproject(
        root,
        f'[tool.testfleet]\npython = "{sys.executable}"\n\n'
        f"[tool.testfleet.services.postgres]\n{postgres}\n"
        f"[tool.testfleet.services.valkey]\n{valkey}\n",
    )
    (root / "test_suite.py").write_text(SUITE)
    return root


def test_libpq_and_redis_variables_only_when_asked(tmp_path: Path, own_run_base: Path):
    """By default lanes get POSTGRES_URL and VALKEY_URL only (the setup command still gets
    PG*), and a test connecting with libpq's defaults fails with a summary naming `export =
    ["libpq"]` under the service; with `export = ["libpq"]` and `export = ["redis"]` the same
    suite passes."""
    # Setup, a command written for testfleet, still reaches the template with libpq's defaults.
    setup = f"setup = [{json.dumps(sys.executable)}, '-c', \"import psycopg; psycopg.connect('')\"]"
    plain = run_cli("run", cwd=project(tmp_path / "plain", setup, ""), env={"ASKED": "0"})
    assert plain.returncode == 1, plain.stderr
    assert "1 failed, 1 passed" in plain.stderr, plain.stderr
    assert "test_connects_as_libpq_does_by_default" in plain.stderr
    assert (
        'add export = ["libpq"] to [tool.testfleet.services.postgres] (or connect through'
        " POSTGRES_URL)" in plain.stderr
    ), plain.stderr

    asked = project(tmp_path / "asked", 'export = ["libpq"]', 'export = ["redis"]')
    done = run_cli("run", cwd=asked, env={"ASKED": "1"})
    assert done.returncode == 0, done.stderr
    assert "2 passed" in done.stderr, done.stderr
    assert 'export = ["libpq"]' not in done.stderr
