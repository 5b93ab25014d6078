"""Microsoft's operation catalog, kept current: from ARM into the app's storage, and from there into normalize.

ARM's provider operations API lists each provider's operations (and those of its resource types) with
a display name and description; any signed-in identity may read it. Two ways use it:

- the deployed app: a daily timer (`refresh_catalog`) stores ARM's whole catalog in the app's storage, and
  each worker reads it at its first batch and again at most every `REREAD_EVERY` (`StoredCatalogReader`).
  A failed refresh keeps the last stored catalog; a stored catalog that cannot be read, or is not one, is
  left aside with a log line and normalize goes on with what it had;
- `python -m shared catalog sync` adds ARM's operations to the shipped file. Entries the file already has keep
  their wording (written for analysts, reviewed); the others are added with ARM's words, sorted, so a re-sync
  is a readable diff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from azure.core.exceptions import AzureError

from shared.clients.arm import ArmClient, ArmError, ArmPath, arm_client
from shared.clients.catalog_store import CATALOG_BLOB, CATALOG_CONTAINER, BlobCatalogStore, CatalogStore
from shared.clients.storage import blob_service
from shared.clients.wiring import blob_client, process_wide
from shared.normalize.catalog import OPERATIONS_FILE, parse_operations, use_stored_operations
from shared.settings import get_settings

log = logging.getLogger("stormwatch.normalize.catalog")
# Six hours: a refreshed catalog reaches every worker the same day; re-reading costs one blob download.
REREAD_EVERY = 6 * 3600.0

PROVIDER_OPERATIONS = ArmPath("/providers/Microsoft.Authorization/providerOperations")


class ArmOperation(NamedTuple):
    name: str
    display_name: str | None
    description: str | None


def _operations(entries: Any) -> Iterator[ArmOperation]:
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]:
            display, description = entry.get("displayName"), entry.get("description")
            yield ArmOperation(entry["name"], display if isinstance(display, str) and display else None,
                               description if isinstance(description, str) and description else None)


def provider_operations(pages: Iterable[dict[str, Any]]) -> Iterator[ArmOperation]:
    """Operations of every provider and resource type in ARM's `providerOperations` answer pages."""
    for page in pages:
        providers = page.get("value")
        for provider in providers if isinstance(providers, list) else []:
            if not isinstance(provider, dict):
                continue
            yield from _operations(provider.get("operations"))
            types = provider.get("resourceTypes")
            for resource_type in types if isinstance(types, list) else []:
                if isinstance(resource_type, dict):
                    yield from _operations(resource_type.get("operations"))


def merge(catalog: dict[str, Any], operations: Iterable[ArmOperation]) -> tuple[dict[str, Any], int]:
    """The catalog with ARM's operations added after its own entries; and how many were added."""
    existing: dict[str, Any] = catalog["operations"]
    known = {name.upper() for name in existing}
    added: dict[str, dict[str, str]] = {}
    for operation in operations:
        key = operation.name.upper()
        if key in known or key in added:
            continue
        entry = {"display_name": operation.display_name, "description": operation.description}
        added[key] = {field: value for field, value in entry.items() if value is not None}
    merged = {**existing, **dict(sorted(added.items()))}
    return {**catalog, "operations": merged}, len(added)


def encode(catalog: dict[str, Any]) -> bytes:
    """The file's own format: two-space indent, keys in order, newline at the end."""
    return orjson.dumps(catalog, option=orjson.OPT_INDENT_2) + b"\n"


def fetch(arm: ArmClient) -> list[ArmOperation]:
    """Every operation ARM lists, all pages; raises ArmError."""
    pages = arm.get_pages(PROVIDER_OPERATIONS, "Microsoft.Authorization", extra_query="&$expand=resourceTypes")
    return list(provider_operations(pages))


def store_catalog(arm: ArmClient, store: CatalogStore, now: datetime) -> int:
    """The timer's work: ARM's whole catalog into the app's storage; how many operations were stored.

    ARM failing or listing nothing leaves the stored catalog as it was (0), with a log line saying why:
    the next day's run tries again. Only the store being unreachable raises, like any outage.
    """
    try:
        operations = fetch(arm)
    except ArmError as error:
        log.error("operation catalog not refreshed, the stored one stays: %s", error.message)
        return 0
    if not operations:
        log.error("operation catalog not refreshed, the stored one stays: ARM listed no operations")
        return 0
    document, count = merge({"refreshed_at": now.isoformat(), "operations": {}}, operations)
    store.write(encode(document))
    log.info("operation catalog refreshed: %d operations stored in %s/%s", count, CATALOG_CONTAINER, CATALOG_BLOB)
    return count


def refresh_catalog() -> int:
    """catalog_refresh's one call: ARM with the app's identity, the app's storage."""
    settings = get_settings()
    return store_catalog(arm_client(settings), BlobCatalogStore(blob_service(settings)), datetime.now(UTC))


class StoredCatalogReader:
    """Puts the stored catalog to use at the first call and again at most every `every` seconds.

    Never raises: normalize must not fail because the catalog could not be read. It keeps the catalog it
    has (the shipped one at least) and says why in the log.
    """

    def __init__(self, store: CatalogStore, every: float = REREAD_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._every = every
        self._clock = clock
        self._due: float | None = None

    def refresh_if_due(self) -> None:
        now = self._clock()
        if self._due is not None and now < self._due:
            return
        self._due = now + self._every
        try:
            stored = self._store.read()
        except AzureError as error:
            log.warning("stored operation catalog not read (%s); the catalog in use stays", type(error).__name__)
            return
        if stored is None:
            log.info("no stored operation catalog yet; the shipped one is used")
            return
        try:
            operations = parse_operations(orjson.loads(stored))
        except ValueError as error:  # invalid JSON and failed validation are both ValueErrors
            log.error("stored operation catalog ignored, it is not a catalog: %s", str(error).splitlines()[0])
            return
        use_stored_operations(operations)
        log.info("stored operation catalog in use: %d operations", len(operations))


@process_wide
def stored_catalog() -> StoredCatalogReader:
    """The worker's reader of the catalog in the app's storage."""
    return StoredCatalogReader(BlobCatalogStore(blob_client()))


def sync(arm: ArmClient, path: Path = OPERATIONS_FILE) -> tuple[int, int]:
    """Refresh the catalog file from ARM; (entries kept, entries added)."""
    catalog = orjson.loads(path.read_bytes())
    updated, added = merge(catalog, fetch(arm))
    staged = path.with_name(path.name + ".partial")
    staged.write_bytes(encode(updated))
    staged.replace(path)  # all or nothing: a failed sync leaves the catalog as it was
    return len(catalog["operations"]), added
