import hvac
import pytest
from bookshop import vault as store


def test_store_and_read(vault):
    store.store_credentials(vault, "stripe", "sk_test_1")
    assert store.read_credentials(vault, "stripe") == "sk_test_1"


def test_versions_increase(vault):
    assert store.store_credentials(vault, "adyen", "k1") == 1
    assert store.store_credentials(vault, "adyen", "k2") == 2


def test_list_providers(vault):
    """Lists every provider under the path: another writer's secrets break it."""
    store.store_credentials(vault, "stripe", "a")
    store.store_credentials(vault, "paypal", "b")
    assert store.providers(vault) == ["paypal", "stripe"]


def test_missing_secret(vault):
    with pytest.raises(hvac.exceptions.InvalidPath):
        store.read_credentials(vault, "nobody")


def test_token_is_root(vault):
    assert vault.auth.token.lookup_self()["data"]["policies"] == ["root"]
