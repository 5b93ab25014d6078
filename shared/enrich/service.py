"""The enrichment service: one method per question, with ARM, the cache and offline data behind it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import maxminddb
import orjson

from shared.clients.arm import ArmClient, ArmError, ArmPath, arm_client
from shared.clients.catalog_store import BlobCatalogStore
from shared.clients.storage import blob_service, table_service
from shared.clients.wiring import process_wide
from shared.enrich.cache import EnrichCache, InProcessCache, TableCache
from shared.enrich.defender import alert_context
from shared.enrich.ip import GeoLookup, ip_context, parse_ip
from shared.enrich.models import (
    AlertContext,
    DismissResult,
    EnrichedEvent,
    EnrichmentProblem,
    EventContext,
    IpContext,
    OperationContext,
    ResourceContext,
)
from shared.enrich.operations import operation_context
from shared.enrich.resource_ids import ResourceTarget, alert_target, resource_target, role_definition_path
from shared.enrich.resources import resource_context
from shared.enrich.servicetags import ServiceTagSource, arm_loader, file_loader
from shared.http_errors import InputError
from shared.normalize.catalog_sync import StoredCatalogReader
from shared.normalized_event import NormalizedEvent
from shared.settings import Settings, SettingsError, env_name, get_settings
from shared.values import as_dict

logger = logging.getLogger("stormwatch.enrich")
RESOURCE_TTL = timedelta(minutes=10)
ALERT_TTL = timedelta(minutes=5)
ROLE_DEFINITION_TTL = timedelta(hours=24)
_Part = TypeVar("_Part")


class Enricher:
    """Answers the API's questions; built once per worker (see `enricher`)."""

    def __init__(self, *, arm: ArmClient, cache: EnrichCache, tags: ServiceTagSource, geo: GeoLookup | None,
                 allow_dismiss: bool, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 catalog: StoredCatalogReader | None = None) -> None:
        self._arm = arm
        self._cache = cache
        self._tags = tags
        self._geo = geo
        self._allow_dismiss = allow_dismiss
        self._clock = clock
        self._catalog = catalog

    def ip(self, value: str) -> IpContext:
        address = parse_ip(value)
        index, problem = self._tags.index()
        return ip_context(address, index, self._geo, [problem] if problem else [])

    def operation(self, name: str, source: str | None = None, result: str | None = None) -> OperationContext:
        if self._catalog is not None:
            self._catalog.refresh_if_due()
        return operation_context(name, source, result)

    def resource(self, resource_id: str) -> ResourceContext:
        target = resource_target(resource_id)
        document, fetched_at = self._read("resource", target.path, target.provider, RESOURCE_TTL)
        return resource_context(target, document, fetched_at=fetched_at, role_name=self._role_name(target, document))

    def alert(self, alert_id: str) -> AlertContext:
        target = alert_target(alert_id)
        document, fetched_at = self._read("alert", target.path, "Microsoft.Security", ALERT_TTL)
        return alert_context(target, document, fetched_at=fetched_at)

    def dismiss(self, alert_id: str, *, by: str) -> DismissResult:
        target = alert_target(alert_id)
        if not self._allow_dismiss:
            raise InputError("dismissing alerts is disabled: an operator enables it with "
                             "STORMWATCH_ALLOW_ALERT_DISMISS=true (and the Security Admin role)", status=403)
        self._arm.post(ArmPath(f"{target.path}/dismiss"), "Microsoft.Security", role="Security Admin")
        self._cache.forget("alert", self._key(target.path, "Microsoft.Security"))
        logger.info(orjson.dumps({"function": "enrich_alert_dismiss", "alert": target.path, "by": by}).decode())
        return DismissResult(id=target.path, status="Dismissed", dismissed_by=by)

    def event(self, event: NormalizedEvent) -> EnrichedEvent:
        """The event with each part of its context that could be found; the others say why not."""
        problems: list[EnrichmentProblem] = []
        ip = self._part("ip", problems, self.ip, event.source_ip)
        operation = self._part("operation", problems,
                               lambda name: self.operation(name, event.source, _word(event.result)), event.operation)
        resource = self._part("resource", problems, self.resource, event.resource_id)
        context = EventContext(ip=ip, operation=operation, resource=resource, problems=problems)
        return EnrichedEvent.model_validate({**event.model_dump(), "enrichment": context})

    @staticmethod
    def _part(part: str, problems: list[EnrichmentProblem], lookup: Callable[[str], _Part],
              value: str | None) -> _Part | None:
        if not value:
            return None
        try:
            return lookup(value)
        except (InputError, ArmError) as error:
            problems.append(EnrichmentProblem.model_validate(
                {"part": part, "status": error.status, "message": error.message}))
            return None

    def _key(self, path: ArmPath, provider: str) -> str:
        """ARM ids are case-insensitive, and logs write them in any case: one entry for all spellings."""
        return f"{path.lower()}?api-version={self._arm.api_version(provider)}"

    def _read(self, kind: str, path: ArmPath, provider: str, ttl: timedelta) -> tuple[dict[str, Any], datetime]:
        """ARM's JSON for the path, from the cache while it is fresh."""
        key = self._key(path, provider)
        now = self._clock()
        cached = self._cache.get(kind, key, now)
        if cached is not None:
            with contextlib.suppress(orjson.JSONDecodeError):  # an unreadable entry is a miss
                document = orjson.loads(cached.payload)
                if isinstance(document, dict):
                    return document, cached.stored_at
        document = self._arm.get(path, provider)
        self._cache.put(kind, key, orjson.dumps(document), now=now, ttl=ttl)
        return document, now

    def _role_name(self, target: ResourceTarget, document: dict[str, Any]) -> str | None:
        """The role a role assignment grants, by name; None when the definition cannot be read."""
        if target.kind != "role_assignment":
            return None
        definition = as_dict(document.get("properties")).get("roleDefinitionId")
        path = role_definition_path(definition) if isinstance(definition, str) else None
        if path is None:
            return None
        try:
            role, _ = self._read("roledefinition", path, "Microsoft.Authorization", ROLE_DEFINITION_TTL)
        except ArmError as error:
            logger.info("role definition %s unreadable: %s", path, error.message)
            return None
        name = as_dict(role.get("properties")).get("roleName")
        return name if isinstance(name, str) else None


def _word(result: str | None) -> str | None:
    """An event's result as the classifier's single word (`Start`, `Failure`); None for anything else."""
    return result if result and result.isalpha() and len(result) <= 32 else None


def build_enricher(settings: Settings) -> Enricher:
    """The worker's enricher from the app settings; unusable settings raise SettingsError."""
    arm = arm_client(settings)
    has_storage = settings.storage_connection_string or settings.table_endpoint
    cache: EnrichCache = (TableCache(table_service(settings), settings.enrich_cache_table) if has_storage
                          else InProcessCache())
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731 - one clock for all parts
    if settings.service_tags_file:
        tags = ServiceTagSource(file_loader(Path(settings.service_tags_file)), clock)
    elif settings.subscription_id:
        try:
            loader = arm_loader(arm, cache, settings.subscription_id, settings.service_tags_region, clock)
        except ValueError as error:
            raise SettingsError(f"{env_name('subscription_id')} / {env_name('service_tags_region')}: "
                                f"{error}") from error
        tags = ServiceTagSource(loader, clock)
    else:
        tags = ServiceTagSource(None, clock, f"no service tag data: set {env_name('subscription_id')} (tags from "
                                             f"ARM) or {env_name('service_tags_file')}")
    try:
        geo = maxminddb.open_database(settings.geoip_database) if settings.geoip_database else None
    except (OSError, maxminddb.InvalidDatabaseError) as error:
        raise SettingsError(f"{env_name('geoip_database')}: unreadable ({type(error).__name__})") from error
    # The operation catalog the app stores daily (catalog_refresh), where there is blob storage to read it from.
    catalog = (StoredCatalogReader(BlobCatalogStore(blob_service(settings)))
               if settings.storage_connection_string or settings.blob_endpoint else None)
    return Enricher(arm=arm, cache=cache, tags=tags, geo=geo, allow_dismiss=settings.allow_alert_dismiss,
                    clock=clock, catalog=catalog)


@process_wide
def enricher() -> Enricher:
    """enrich_fn's service: ARM client, cache table and service tag index stay warm in the worker."""
    return build_enricher(get_settings())
