"""Payment provider credentials in Vault's KV v2 engine."""

from __future__ import annotations

import hvac

MOUNT = "secret"
PREFIX = "bookshop/payments"


def client(addr: str, token: str) -> hvac.Client:
    return hvac.Client(url=addr, token=token)


def store_credentials(vault: hvac.Client, provider: str, api_key: str) -> int:
    """Returns the new version number of the secret."""
    result = vault.secrets.kv.v2.create_or_update_secret(
        path=f"{PREFIX}/{provider}", secret={"api_key": api_key}, mount_point=MOUNT
    )
    return int(result["data"]["version"])


def read_credentials(vault: hvac.Client, provider: str) -> str:
    result = vault.secrets.kv.v2.read_secret_version(
        path=f"{PREFIX}/{provider}", mount_point=MOUNT, raise_on_deleted_version=True
    )
    return str(result["data"]["data"]["api_key"])


def providers(vault: hvac.Client) -> list[str]:
    try:
        result = vault.secrets.kv.v2.list_secrets(path=PREFIX, mount_point=MOUNT)
    except hvac.exceptions.InvalidPath:
        return []
    return sorted(result["data"]["keys"])


def remove_all(vault: hvac.Client) -> None:
    for provider in providers(vault):
        vault.secrets.kv.v2.delete_metadata_and_all_versions(
            path=f"{PREFIX}/{provider}", mount_point=MOUNT
        )
