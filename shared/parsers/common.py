"""Pieces every mapper shares: the event skeleton, stable ids, resource fields, final offline context."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import orjson

from shared.catalog import classify, operation_description
from shared.events import FIELD_NAMES
from shared.parsers.resource_id import parse_resource_id
from shared.parsers.values import Record, severity, text, utc_text

_SKELETON: dict[str, Any] = dict.fromkeys(FIELD_NAMES)


def new_event(source: str, category: str | None, time_value: Any) -> Record:
    """An event with every contract field present (null when absent) and its time in UTC."""
    event = _SKELETON.copy()
    event["source"] = source
    event["category"] = category
    event["time"] = utc_text(time_value)
    event["common_event"] = "Other"
    event["action"] = "other"
    return event


def content_id(record: Record) -> str:
    """A stable id for records that carry none: the hash of the record's canonical bytes."""
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


def set_resource(event: Record, resource_id: Any) -> None:
    """Fill subscription, resource group, provider, type and name from a resource id."""
    resource = text(resource_id)
    if resource is None or not resource.startswith("/"):
        return
    parsed = parse_resource_id(resource)
    event["resource_id"] = resource
    event["subscription_id"] = parsed.subscription_id
    event["resource_group"] = parsed.resource_group
    event["resource_provider"] = parsed.resource_provider
    event["resource_type"] = parsed.resource_type
    event["resource_name"] = parsed.resource_name


_CLAIM_UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
_CLAIM_NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
_CLAIM_OBJECT_ID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
CLAIM_TENANT = "http://schemas.microsoft.com/identity/claims/tenantid"


def set_claims(event: Record, claims: Record) -> None:
    """Who, from the token claims Azure copies into Activity Log and resource logs (long or short names)."""
    event["actor"] = (text(claims.get(_CLAIM_UPN)) or text(claims.get("upn"))
                      or text(claims.get(_CLAIM_NAME)) or text(claims.get("name"))
                      or text(claims.get("unique_name")))
    event["actor_id"] = text(claims.get(_CLAIM_OBJECT_ID)) or text(claims.get("oid"))
    event["actor_app_id"] = text(claims.get("appid"))
    if event["actor_type"] is None and (claims.get(_CLAIM_UPN) or claims.get("upn")):
        event["actor_type"] = "User"


@lru_cache(maxsize=16384)
def action_from_operation(operation: str | None) -> str:
    """The verb of an ARM operation id: `.../WRITE` → create_or_update, `.../DELETE` → delete."""
    if not operation:
        return "other"
    verb = operation.rsplit("/", 1)[-1].upper()
    return _VERBS.get(verb, "other")


def set_envelope(event: Record, lowered: Record) -> None:
    """The fields every Azure Monitor diagnostic record shares (Activity Log and resource logs alike)."""
    operation = text(lowered.get("operationname"))
    event["operation"] = operation.upper() if operation else None
    event["action"] = action_from_operation(event["operation"])
    event["severity"] = severity(lowered.get("level"))
    event["correlation_id"] = text(lowered.get("correlationid"))
    event["region"] = text(lowered.get("location"))


_VERBS = {"WRITE": "create_or_update", "DELETE": "delete", "ACTION": "action", "READ": "read"}


def finish(event: Record, status_code: str | None = None) -> Record:
    """Add the offline context (description, common event) once the mapper set the other fields."""
    event["operation_description"] = operation_description(event["operation"])
    event["common_event"] = classify(event["source"], event["operation"], action=event["action"],
                                     result=event["result"], category=event["category"],
                                     status_code=status_code)
    return event


def compact(values: dict[str, Any]) -> dict[str, Any] | None:
    """Drop empty entries; None when nothing is left (keeps `details` null rather than `{}`)."""
    kept = {key: value for key, value in values.items() if value is not None and value != ""}
    return kept or None
