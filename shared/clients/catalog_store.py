"""Where the app keeps Microsoft's operation catalog: one blob in its storage account, replaced whole."""

from __future__ import annotations

import contextlib
from typing import Protocol

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

CATALOG_CONTAINER = "catalog"
CATALOG_BLOB = "operations.json"


class CatalogStore(Protocol):
    def read(self) -> bytes | None:
        """The stored catalog, None when none was stored yet; raise when the store cannot be reached."""

    def write(self, document: bytes) -> None:
        """Replace the stored catalog in one step; raise when the store cannot be reached."""


class BlobCatalogStore:
    """`catalog/operations.json` in the app's storage account; an upload replaces the blob atomically, so a
    reader sees the old catalog or the new one, never half of one."""

    def __init__(self, service: BlobServiceClient, container: str = CATALOG_CONTAINER,
                 blob: str = CATALOG_BLOB) -> None:
        self._container = service.get_container_client(container)
        self._blob = blob

    def read(self) -> bytes | None:
        try:
            return self._container.download_blob(self._blob).readall()
        except ResourceNotFoundError:
            return None

    def write(self, document: bytes) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()
        self._container.upload_blob(self._blob, document, overwrite=True)
