"""`python -m shared catalog sync`: add every ARM provider's operations to the operation catalog.

ARM's provider operations API lists each provider's operations (and those of its resource types) with
a display name and description. Entries the catalog already has keep their wording (written for
analysts, reviewed); the others are added with ARM's words, sorted, so a re-sync is a readable diff.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from shared.clients.arm import ArmClient, ArmPath
from shared.normalize.catalog import OPERATIONS_FILE

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


def sync(arm: ArmClient, path: Path = OPERATIONS_FILE) -> tuple[int, int]:
    """Refresh the catalog file from ARM; (entries kept, entries added)."""
    catalog = orjson.loads(path.read_bytes())
    pages = arm.get_pages(PROVIDER_OPERATIONS, "Microsoft.Authorization", extra_query="&$expand=resourceTypes")
    updated, added = merge(catalog, provider_operations(pages))
    staged = path.with_name(path.name + ".partial")
    staged.write_bytes(encode(updated))
    staged.replace(path)  # all or nothing: a failed sync leaves the catalog as it was
    return len(catalog["operations"]), added
