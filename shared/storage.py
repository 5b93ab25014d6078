"""Clients for the storage account: a connection string locally (Azurite), managed identity in Azure."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from azure.data.tables import TableServiceClient
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient

from shared.azurite import DEV_CONNECTION_STRING
from shared.settings import Settings, SettingsError, env_name

# Fail over to the function's retry policy quickly instead of stalling inside one SDK call.
CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 3, "retry_backoff_factor": 0.5, "connection_timeout": 10,
                  "read_timeout": 30}


@lru_cache(maxsize=1)
def default_credential() -> DefaultAzureCredential:
    """DefaultAzureCredential: the managed identity in Azure, a developer's login locally."""
    return DefaultAzureCredential()


def _local_connection_string(settings: Settings) -> str | None:
    """The configured connection string, with the `UseDevelopmentStorage=true` shortcut expanded."""
    value = settings.storage_connection_string
    if value and value.replace(" ", "").lower() == "usedevelopmentstorage=true":
        return DEV_CONNECTION_STRING
    return value


def blob_service(settings: Settings) -> BlobServiceClient:
    connection = _local_connection_string(settings)
    if connection:
        return BlobServiceClient.from_connection_string(connection, **CLIENT_OPTIONS)
    if settings.blob_endpoint:
        return BlobServiceClient(settings.blob_endpoint, credential=default_credential(), **CLIENT_OPTIONS)
    raise SettingsError(f"set {env_name('blob_endpoint')} (Azure) or "
                        f"{env_name('storage_connection_string')} (local) for dead letters")


def table_service(settings: Settings) -> TableServiceClient:
    connection = _local_connection_string(settings)
    if connection:
        return TableServiceClient.from_connection_string(connection, **CLIENT_OPTIONS)
    if settings.table_endpoint:
        return TableServiceClient(settings.table_endpoint, credential=default_credential(), **CLIENT_OPTIONS)
    raise SettingsError(f"set {env_name('table_endpoint')} (Azure) or "
                        f"{env_name('storage_connection_string')} (local) for state tables")
