import json
import urllib.error
import urllib.request

import pytest

from tests.conftest import seed


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _post(url: str, payload: object) -> tuple[int, object]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_api_sees_this_lanes_database(db, api_url):
    """The API was started for this lane, against this lane's database."""
    seed(db)
    assert [b["title"] for b in _get(f"{api_url}/books")] == ["Dune", "Emma", "Persuasion"]


def test_api_get_book(db, cache_client, api_url):
    seed(db)
    assert _get(f"{api_url}/books/978-1")["author"] == "Austen"


def test_api_missing_book(db, cache_client, api_url):
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(f"{api_url}/books/none")
    assert info.value.code == 404


def test_api_order(db, cache_client, api_url):
    seed(db)
    status, body = _post(f"{api_url}/orders", {"customer": "ada", "lines": {"978-0": 2}})
    assert (status, body) == (201, {"order_id": 1, "total_cents": 2598})


def test_api_out_of_stock(db, cache_client, api_url):
    seed(db)
    status, _ = _post(f"{api_url}/orders", {"customer": "ada", "lines": {"978-2": 1}})
    assert status == 409
