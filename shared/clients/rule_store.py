"""Where a deployment keeps its own rules and lists: a blob container laid out like the packaged `rules/`."""

from __future__ import annotations

from typing import Protocol

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

RULES_CONTAINER = "rules"


class RuleStore(Protocol):
    def listing(self) -> dict[str, str]:
        """Blob name → ETag of every blob; empty when the container does not exist. Raise on an outage."""

    def read(self, name: str, limit: int) -> bytes:
        """One blob's first `limit` bytes (a huge upload is never held in memory); raise when it cannot be
        read (gone since the listing, or an outage)."""


class BlobRuleStore:
    """The rules container of the app's storage account. The ETags let a reader tell, with one listing
    request, whether anything changed since it last loaded the container."""

    def __init__(self, service: BlobServiceClient, container: str = RULES_CONTAINER) -> None:
        self._container = service.get_container_client(container)

    def listing(self) -> dict[str, str]:
        try:
            return {blob.name: blob.etag for blob in self._container.list_blobs()}
        except ResourceNotFoundError:
            return {}

    def read(self, name: str, limit: int) -> bytes:
        try:
            return self._container.download_blob(name, offset=0, length=limit).readall()
        except HttpResponseError as error:
            if error.status_code == 416:  # an empty blob has no first byte to range over
                return b""
            raise
