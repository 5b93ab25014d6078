"""Azure service tags: from ARM's service-tags API (cached) or an offline file, kept in memory.

Both sources share one shape: ARM's `serviceTags` list answer is what Microsoft's downloadable
`ServiceTags_Public_*.json` contains (`changeNumber`, `cloud`, `values[].properties.addressPrefixes`).
The index lives for the life of the worker and is rebuilt after `ttl`; a failed load is remembered for
a minute so that an ARM outage costs one slow request, not every request.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from shared.clients.arm import ArmClient, ArmError, ArmPath
from shared.enrich.cache import EnrichCache
from shared.enrich.ip import ServiceTag, ServiceTagIndex
from shared.enrich.resource_ids import subscription_path

logger = logging.getLogger("stormwatch.enrich")
TAGS_TTL = timedelta(hours=24)
FAILURE_TTL = timedelta(minutes=1)
_REGION = re.compile(r"[a-z0-9]{1,40}")


def parse_service_tags(document: dict[str, Any]) -> tuple[list[ServiceTag], str | None]:
    """Tags and the document's change number from an ARM answer or the downloadable file."""
    tags: list[ServiceTag] = []
    values = document.get("values")
    for value in values if isinstance(values, list) else []:
        properties = value.get("properties") if isinstance(value, dict) else None
        if not isinstance(properties, dict) or not isinstance(value.get("name"), str):
            continue
        prefixes = properties.get("addressPrefixes")
        tags.append(ServiceTag(
            name=value["name"], region=properties.get("region") or None,
            system_service=properties.get("systemService") or None,
            prefixes=tuple(prefix for prefix in prefixes if isinstance(prefix, str))
            if isinstance(prefixes, list) else ()))
    change = document.get("changeNumber")
    return tags, str(change) if change is not None else None


def _encode(tags: Iterable[ServiceTag]) -> bytes:
    return orjson.dumps([[tag.name, tag.region, tag.system_service, list(tag.prefixes)] for tag in tags])


def _decode(payload: bytes) -> list[ServiceTag]:
    return [ServiceTag(name, region, service, tuple(prefixes)) for name, region, service, prefixes
            in orjson.loads(payload)]


def file_loader(path: Path) -> Callable[[], ServiceTagIndex]:
    def load() -> ServiceTagIndex:
        tags, change = parse_service_tags(orjson.loads(path.read_bytes()))
        return ServiceTagIndex.build(tags, f"file {path.name}, change {change}")
    return load


def arm_loader(arm: ArmClient, cache: EnrichCache, subscription_id: str, region: str,
               clock: Callable[[], datetime]) -> Callable[[], ServiceTagIndex]:
    """Tags of the subscription's cloud from ARM (all regions; `region` only picks the API's version)."""
    if not _REGION.fullmatch(region):
        raise ValueError("the service tags region is not an Azure region name (e.g. westeurope)")
    path = ArmPath(f"{subscription_path(subscription_id)}/providers/Microsoft.Network/locations/{region}/serviceTags")
    key = f"{path}?api-version={arm.api_version('Microsoft.Network')}"

    def load() -> ServiceTagIndex:
        now = clock()
        cached = cache.get("servicetags", key, now)
        if cached is not None:
            tags = _decode(cached.payload)
            change = cached.note
        else:
            tags, change = [], None
            for page in arm.get_pages(path, "Microsoft.Network"):
                page_tags, page_change = parse_service_tags(page)
                tags.extend(page_tags)
                change = change or page_change
            cache.put("servicetags", key, _encode(tags), now=now, ttl=TAGS_TTL, note=change)
        return ServiceTagIndex.build(tags, f"arm {region}, change {change}")
    return load


class ServiceTagSource:
    """The current tag index for the worker, loaded on first use and after it expires."""

    def __init__(self, loader: Callable[[], ServiceTagIndex] | None, clock: Callable[[], datetime],
                 unavailable: str = "") -> None:
        self._loader = loader
        self._clock = clock
        self._unavailable = unavailable
        self._lock = threading.Lock()
        self._index: ServiceTagIndex | None = None
        self._problem: str | None = None
        self._valid_until = datetime.min.replace(tzinfo=clock().tzinfo)

    def index(self) -> tuple[ServiceTagIndex | None, str | None]:
        """The index, or None and the reason it is missing."""
        if self._loader is None:
            return None, self._unavailable
        if self._clock() < self._valid_until:
            return self._index, self._problem
        with self._lock:
            now = self._clock()
            if now >= self._valid_until:
                self._refresh(self._loader, now)
            return self._index, self._problem

    def _refresh(self, loader: Callable[[], ServiceTagIndex], now: datetime) -> None:
        try:
            self._index, self._problem = loader(), None
            self._valid_until = now + TAGS_TTL
        except (ArmError, OSError, ValueError) as error:
            message = error.message if isinstance(error, ArmError) else type(error).__name__
            logger.warning("service tags unavailable: %s", message)
            self._problem = f"service tags unavailable: {message}"
            self._valid_until = now + FAILURE_TTL  # keep a stale index, if any, until the next try
