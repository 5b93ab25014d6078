"""Clients for the storage account: a connection string locally (Azurite), managed identity in Azure.

The SDKs are imported when a client is first built, not with this module: `is_outage` is imported by
every function, and azure.identity and azure.storage.blob alone cost about 0.1 s of each cold start.
"""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError

from shared.settings import Settings, SettingsError, env_name

if TYPE_CHECKING:
    from azure.core.pipeline.transport import RequestsTransport
    from azure.data.tables import TableClient, TableServiceClient
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import BlobServiceClient

class OwnTable:
    """One table of the app's storage, created once per process at its first use (`ensure_table`): a
    deployment or a fresh Azurite may not have it yet, and the first call also proves the endpoint answers."""

    def __init__(self, table: TableClient) -> None:
        self.table = table
        self._ready = False

    def ensure_table(self) -> None:
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self.table.create_table()
            self._ready = True

    def clear(self) -> int:
        """Delete every row (`replay --fresh`, the demo); the number deleted."""
        self.ensure_table()
        rows = list(self.table.list_entities(select=["PartitionKey", "RowKey"]))
        for row in rows:
            self.table.delete_entity(row["PartitionKey"], row["RowKey"])
        return len(rows)


# Fail fast inside one call and let the function's retry policy (exponential, unbounded) do the long
# waiting: a storage call blocked for minutes would hold the batch past the function timeout.
_TIMEOUTS: dict[str, Any] = {"connection_timeout": 10, "read_timeout": 30}

# What storage answers about one request's content (bad request, conflict, length, too large, URL too
# long, range): the same content fails the same way on every retry.
_CONTENT_STATUSES = frozenset({400, 409, 411, 413, 414, 416})


def is_outage(error: Exception) -> bool:
    """True when a storage call failed for a reason a retry can outlast (no connection, timeout, 5xx,
    429, access or a missing table or container an operator must fix), so the batch must raise; False
    when the request's own content was refused (a 4xx above) or nothing was sent at all (a value the SDK
    rejected, a bug): those fail the same way on every retry and must end as a dead letter or a smaller
    write, or the partition would stall for ever. The one place the split is made (README "Failure
    handling")."""
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        return error.status_code not in _CONTENT_STATUSES
    return isinstance(error, AzureError | TimeoutError | ConnectionError)


# Azurite's well-known development account: public, documented, and accepted only by the emulator.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_PORTS = {"blob": 10000, "queue": 10001, "table": 10002}


def emulator_connection_string(ports: dict[str, int], host: str = "127.0.0.1") -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://{host}:{ports['blob']}/{DEV_ACCOUNT};"
            f"QueueEndpoint=http://{host}:{ports['queue']}/{DEV_ACCOUNT};"
            f"TableEndpoint=http://{host}:{ports['table']}/{DEV_ACCOUNT};")


DEV_CONNECTION_STRING = emulator_connection_string(DEFAULT_PORTS)


# A person at a terminal (the command line) gets one attempt and a short wait, then a clear message.
_QUICK: dict[str, Any] = {"connection_timeout": 3, "read_timeout": 10}


def _blob_options(quick: bool) -> dict[str, Any]:
    from azure.storage.blob import ExponentialRetry  # noqa: PLC0415 - cold start

    if quick:
        return {"retry_policy": ExponentialRetry(retry_total=0), **_QUICK}
    return {"retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3), **_TIMEOUTS}


def _table_options() -> dict[str, Any]:
    # The timeouts go to the transport: a client given a transport does not pass them on.
    return {"retry_total": 3, "retry_backoff_factor": 0.5, "transport": opened_transport(**_TIMEOUTS)}


def opened_transport(**timeouts: Any) -> RequestsTransport:
    """An HTTP transport whose session exists before threads share it.

    azure-core creates the session at the first request and then re-mounts its adapters; detect writes state
    on 8 threads, and a first request made meanwhile can find no adapter for `http://` ("No connection
    adapters were found"), failing a batch for nothing. The bench/soak.py run found it.
    """
    from azure.core.pipeline.transport import RequestsTransport  # noqa: PLC0415 - cold start: requests

    # Reading the environment's proxy settings and ~/.netrc on every request costs about 5% of detect's CPU
    # under a flood; they are read only when a proxy is configured at all.
    proxied = any(name.lower().endswith("_proxy") for name in os.environ)
    transport = RequestsTransport(use_env_settings=proxied, **timeouts)
    transport.open()
    return transport


@lru_cache(maxsize=1)
def default_credential() -> DefaultAzureCredential:
    """DefaultAzureCredential: the managed identity in Azure, a developer's login locally."""
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - cold start

    return DefaultAzureCredential()


def local_connection_string(settings: Settings) -> str | None:
    """The configured connection string, with the `UseDevelopmentStorage=true` shortcut expanded."""
    value = settings.storage_connection_string
    if value and value.replace(" ", "").lower() == "usedevelopmentstorage=true":
        return DEV_CONNECTION_STRING
    return value


def blob_service(settings: Settings, *, quick: bool = False) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - cold start

    connection = local_connection_string(settings)
    if connection:
        return BlobServiceClient.from_connection_string(connection, **_blob_options(quick))
    if settings.blob_endpoint:
        return BlobServiceClient(settings.blob_endpoint, credential=default_credential(), **_blob_options(quick))
    raise SettingsError(f"set {env_name('blob_endpoint')} (Azure) or "
                        f"{env_name('storage_connection_string')} (local) for dead letters")


def table_service(settings: Settings) -> TableServiceClient:
    from azure.data.tables import TableServiceClient  # noqa: PLC0415 - cold start

    connection = local_connection_string(settings)
    if connection:
        return TableServiceClient.from_connection_string(connection, **_table_options())
    if settings.table_endpoint:
        return TableServiceClient(settings.table_endpoint, credential=default_credential(),
                                  **_table_options())
    raise SettingsError(f"set {env_name('table_endpoint')} (Azure) or "
                        f"{env_name('storage_connection_string')} (local) for state tables")
