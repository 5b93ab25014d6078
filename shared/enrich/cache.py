"""Cache of ARM answers with expiry: the `enrichcache` table in Azure, a dict in a local run.

Table Storage has no TTL, so each entry carries `expires_at` and an expired entry reads as a miss (it is
overwritten by the next put). A property holds at most 64 KiB and the service tag list is megabytes, so
a payload is compressed and split across rows `<key hash>.000`, `.001`, ... of one partition; row 0 is
written last and names the generation of its parts, so a reader never stitches two writes together.
A cache that cannot be reached is a miss, never an error: enrichment then goes to ARM directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import uuid
import zlib
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

logger = logging.getLogger("stormwatch.enrich")
PART_BYTES = 60_000  # under the 64 KiB limit of one binary property
MAX_PARTS = 200


class CachedDocument(NamedTuple):
    payload: bytes
    stored_at: datetime
    note: str | None


class EnrichCache(Protocol):
    def get(self, kind: str, key: str, now: datetime) -> CachedDocument | None:
        """The unexpired entry, or None (also when the store cannot be reached)."""

    def put(self, kind: str, key: str, payload: bytes, *, now: datetime, ttl: timedelta,
            note: str | None = None) -> None:
        """Store or replace an entry; failures are logged, not raised."""

    def forget(self, kind: str, key: str) -> None:
        """Drop an entry whose subject changed (e.g. an alert just dismissed)."""


class InProcessCache:
    """The cache of a local run without storage settings: entries live as long as the process."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[CachedDocument, datetime]] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, key: str, now: datetime) -> CachedDocument | None:
        with self._lock:
            entry = self._entries.get((kind, key))
        return entry[0] if entry is not None and now < entry[1] else None

    def put(self, kind: str, key: str, payload: bytes, *, now: datetime, ttl: timedelta,
            note: str | None = None) -> None:
        with self._lock:
            self._entries[(kind, key)] = (CachedDocument(payload, now, note), now + ttl)

    def forget(self, kind: str, key: str) -> None:
        with self._lock:
            self._entries.pop((kind, key), None)


def _row_prefix(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


class TableCache:
    """Entries as rows of one table, partitioned by kind (`resource`, `alert`, `servicetags`, ...)."""

    def __init__(self, service: TableServiceClient, table: str) -> None:
        self._service = service
        self._table_name = table
        self._table: TableClient | None = None

    def _client(self) -> TableClient:
        if self._table is None:
            with contextlib.suppress(ResourceExistsError):
                self._service.create_table(self._table_name)
            self._table = self._service.get_table_client(self._table_name)
        return self._table

    def get(self, kind: str, key: str, now: datetime) -> CachedDocument | None:
        prefix = _row_prefix(key)
        try:
            head = self._client().get_entity(kind, f"{prefix}.000")
            if head.get("key") != key or head["expires_at"] <= now:
                return None
            parts = [head]
            if head["parts"] > 1:
                parts += list(self._client().query_entities(
                    "PartitionKey eq @kind and RowKey gt @first and RowKey lt @after",
                    parameters={"kind": kind, "first": f"{prefix}.000", "after": f"{prefix}/"}))
            return self._assemble(head, parts)
        except ResourceNotFoundError:
            return None
        except (AzureError, KeyError, TypeError, zlib.error) as error:
            logger.warning("enrich cache read failed (%s): treated as a miss", type(error).__name__)
            return None

    @staticmethod
    def _assemble(head: dict[str, Any], rows: list[Any]) -> CachedDocument | None:
        chosen = sorted((row for row in rows if row.get("generation") == head["generation"]),
                        key=lambda row: str(row["RowKey"]))[: head["parts"]]
        if len(chosen) != head["parts"]:
            return None  # parts of another write: a miss, the next put repairs it
        payload = zlib.decompress(b"".join(bytes(row["data"]) for row in chosen))
        return CachedDocument(payload, head["stored_at"], head.get("note"))

    def put(self, kind: str, key: str, payload: bytes, *, now: datetime, ttl: timedelta,
            note: str | None = None) -> None:
        packed = zlib.compress(payload, 6)
        pieces = [packed[start:start + PART_BYTES] for start in range(0, len(packed), PART_BYTES)] or [b""]
        if len(pieces) > MAX_PARTS:
            logger.warning("enrich cache entry of %d bytes is too large to store", len(payload))
            return
        prefix, generation = _row_prefix(key), uuid.uuid4().hex
        try:
            client = self._client()
            for number in range(len(pieces) - 1, -1, -1):  # row 0 last: it makes the entry visible
                entity: dict[str, Any] = {"PartitionKey": kind, "RowKey": f"{prefix}.{number:03d}",
                                          "generation": generation, "data": pieces[number]}
                if number == 0:
                    entity |= {"key": key, "parts": len(pieces), "stored_at": now, "expires_at": now + ttl}
                    if note is not None:
                        entity["note"] = note
                client.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except AzureError as error:
            logger.warning("enrich cache write failed (%s)", type(error).__name__)

    def forget(self, kind: str, key: str) -> None:
        try:
            self._client().delete_entity(kind, f"{_row_prefix(key)}.000")
        except ResourceNotFoundError:
            pass
        except AzureError as error:
            logger.warning("enrich cache delete failed (%s)", type(error).__name__)
