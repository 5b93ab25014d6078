"""A Defender for Cloud alert as ARM returns it (`Microsoft.Security/locations/alerts`, 2022-01-01),
reduced to what an analyst reads first. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.enrich.models import AlertContext
from shared.enrich.resource_ids import AlertTarget
from shared.values import as_dict, text


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def alert_context(target: AlertTarget, document: dict[str, Any], *, fetched_at: datetime) -> AlertContext:
    properties = as_dict(document.get("properties"))
    identifiers = properties.get("resourceIdentifiers")
    resource_ids = [item["azureResourceId"] for item in identifiers
                    if isinstance(item, dict) and isinstance(item.get("azureResourceId"), str)] \
        if isinstance(identifiers, list) else []
    entities = properties.get("entities")
    extended = properties.get("extendedProperties")
    return AlertContext(
        id=text(document.get("id")) or target.path, name=text(document.get("name")) or target.name,
        display_name=text(properties.get("alertDisplayName")), alert_type=text(properties.get("alertType")),
        severity=text(properties.get("severity")), status=text(properties.get("status")),
        intent=text(properties.get("intent")), product_name=text(properties.get("productName")),
        description=text(properties.get("description")),
        compromised_entity=text(properties.get("compromisedEntity")),
        start_time=text(properties.get("startTimeUtc")), end_time=text(properties.get("endTimeUtc")),
        time_generated=text(properties.get("timeGeneratedUtc")), resource_ids=resource_ids,
        remediation_steps=_strings(properties.get("remediationSteps")),
        entities=[entity for entity in entities if isinstance(entity, dict)] if isinstance(entities, list) else [],
        extended_properties=extended if isinstance(extended, dict) else {},
        techniques=_strings(properties.get("techniques")), alert_uri=text(properties.get("alertUri")),
        fetched_at=fetched_at)
