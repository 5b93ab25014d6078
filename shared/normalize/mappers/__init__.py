"""Mapping Azure log records to normalized events: envelope splitting and dispatch by real category."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from shared.normalize.mappers.activity import CATEGORIES, OPERATION_TYPE_CATEGORIES, map_activity
from shared.normalize.mappers.activity_rest import is_activity_rest, map_activity_rest
from shared.normalize.mappers.cloudevents import is_cloud_event, map_event_grid
from shared.normalize.mappers.common import content_id
from shared.normalize.mappers.defender import is_defender, map_defender
from shared.normalize.mappers.graph import graph_kind, map_graph, map_user_risk_event
from shared.normalize.mappers.identity import AUDIT_CATEGORIES, SIGNIN_CATEGORIES, map_audit, map_signin
from shared.normalize.mappers.log_analytics import is_log_analytics, map_log_analytics
from shared.normalize.mappers.resource import POLICY_EVENT_PREFIX, map_resource_log
from shared.values import MappingError, Record, first, spelled_fields, text

__all__ = ["MappingError", "map_record", "split_body"]

_BOM = b"\xef\xbb\xbf"


def split_body(body: bytes) -> list[Any]:
    """The records of one Event Hub body: an envelope `{"records": [...]}`, a REST page `{"value": [...]}`,
    an array, or one object.

    Raises MappingError (the whole body becomes one dead letter) when the body is not usable JSON.
    Items are returned as they are: the caller dead-letters those that are not objects.
    """
    if body.startswith(_BOM):
        body = body[len(_BOM):]
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MappingError(f"body is not valid JSON: {error}") from error
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        records_key = "records" if "records" in document else next(
            (key for key in document if key.lower() == "records"), None)
        if records_key is None:
            return _page_items(document)
        records = document[records_key]
        if not isinstance(records, list):
            raise MappingError(f"'records' is not a list but {_json_type(records)}")
        return records
    raise MappingError(f"body is neither an object nor an array but {_json_type(document)}")


# A page of Graph or ARM REST results: `{"@odata.context": ..., "value": [...], "@odata.nextLink": ...}`.
_PAGE_KEYS = frozenset({"value", "@odata.context", "@odata.nextLink", "@odata.count", "nextLink"})


def _page_items(document: dict[str, Any]) -> list[Any]:
    """The items of a REST page (`az rest` on Graph, the Activity Log API), else the object itself."""
    items = document.get("value")
    if isinstance(items, list) and document.keys() <= _PAGE_KEYS:
        return items
    return [document]


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def map_record(record: Any) -> Record:
    """Dispatch one record to its mapper by its real category; MappingError says why it cannot be."""
    if type(record) is not dict:
        raise MappingError(f"record is not an object but {_json_type(record)}")
    fields = spelled_fields(record)
    mapper = _choose_mapper(fields)
    try:
        event = mapper(record, fields)
    except MappingError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as error:
        # A record whose fields have unexpected types: say which mapper and what broke.
        raise MappingError(f"cannot map record: {type(error).__name__}: {error}") from error
    if event["event_id"] is None:
        event["event_id"] = content_id(record)
    return event


Mapper = Callable[[Record, Record], Record]


def _choose_mapper(fields: Record) -> Mapper:
    """Event Hub exports (they all carry `time`) by the real category as written (`Administrative`,
    `SignInLogs`: one lookup), else normalized; the other shapes, and records without a known category,
    by the record's shape."""
    if "time" not in fields:
        shaped = _other_shape(fields)
        if shaped is not None:
            return shaped
    properties = fields.get("properties")
    written = properties.get("eventCategory") if type(properties) is dict else None
    if not written:
        written = fields.get("category")
    if type(written) is str:
        mapper = _BY_CATEGORY.get(written)
        if mapper is not None:
            return mapper
    return _BY_CATEGORY.get(_real_category(fields)) or _mapper_by_shape(fields)


def _real_category(fields: Record) -> str:
    """`properties.eventCategory` when present (Activity Log exports), else the top-level `category`."""
    properties = fields.get("properties")
    if type(properties) is dict:
        event_category = text(properties.get("eventCategory"))
        if event_category:
            return event_category.lower()
    return (text(fields.get("category")) or "").lower()


def _by_category() -> dict[str, Mapper]:
    """Category (lower-cased, and as Azure spells it) → mapper, built once: dispatch runs per record."""
    mappers: dict[str, Mapper] = {}
    for key, name in CATEGORIES.items():
        mappers[key] = partial(map_activity, name)
    for key in OPERATION_TYPE_CATEGORIES:
        mappers[key] = partial(map_activity, "Administrative")
    for key in SIGNIN_CATEGORIES:
        mappers[key] = partial(map_signin, key)
    for key in AUDIT_CATEGORIES:
        mappers[key] = partial(map_audit, key)
    mappers["policy"] = _policy_or_audit
    mappers["userriskevents"] = map_user_risk_event
    # The spellings Azure writes, so most records find their mapper without lower-casing.
    spelled = {name: key for key, name in CATEGORIES.items()}
    spelled |= {key.capitalize(): key for key in OPERATION_TYPE_CATEGORIES}
    spelled |= {name: key for key, (name, _) in SIGNIN_CATEGORIES.items()}
    spelled |= {name: key for key, name in AUDIT_CATEGORIES.items()}
    spelled["UserRiskEvents"] = "userriskevents"
    return mappers | {name: mappers[key] for name, key in spelled.items()}


def _policy_or_audit(record: Record, fields: Record) -> Record:
    """`Policy` is an Activity Log category and also the Entra audit sub-category that some exports
    write as the record's category: an audit activity says which."""
    properties = fields.get("properties")
    if type(properties) is dict and "activityDisplayName" in properties:
        return map_audit("auditlogs", record, fields)
    return map_activity("Policy", record, fields)


_BY_CATEGORY = _by_category()


def _other_shape(fields: Record) -> Mapper | None:
    """The shapes other than the Event Hub export: Log Analytics rows (data export rules), Graph
    objects, the Activity Log REST shape and Event Grid events; None for none of them."""
    if is_log_analytics(fields):
        return map_log_analytics
    kind = graph_kind(fields)
    if kind is not None:
        return partial(map_graph, kind)
    if is_activity_rest(fields):
        return map_activity_rest
    if is_cloud_event(fields):
        return map_event_grid
    return None


def _mapper_by_shape(fields: Record) -> Mapper:
    """Records without a known category: Defender objects, Entra audit records under a legacy or
    sub-category, Event Grid events, other resource logs."""
    if is_defender(fields):
        return map_defender
    properties = fields.get("properties")
    if type(properties) is dict and "activityDisplayName" in properties:
        return partial(map_audit, "auditlogs")
    event_type = text(fields.get("eventType"))
    if is_cloud_event(fields) or (event_type and event_type.lower().startswith(POLICY_EVENT_PREFIX)):
        return map_event_grid
    if first(fields, "time", "timestamp", "timeGenerated") is None:
        raise MappingError(_unsupported(fields))
    return map_resource_log


_GRAPH_KEYS = ("createdDateTime", "activityDateTime", "detectedDateTime", "lastUpdateDateTime")


def _unsupported(fields: Record) -> str:
    """Why a record without a time any mapper reads cannot be mapped: the shape it looks like, what it lacks."""
    timed = [key for key in fields if key.lower().endswith(("time", "timestamp", "datetime", "timeutc", "date"))]
    if any(key.startswith("@odata") for key in fields) or any(key in fields for key in _GRAPH_KEYS):
        kind = text(fields.get("@odata.type")) or "unknown type"
        looks = (f"looks like a Microsoft Graph object ({kind}); mapped are signIn, directoryAudit, riskDetection and "
                 "security alert")
    elif "category" in fields or "operationName" in fields or "resourceId" in fields:
        looks = "looks like an Azure Monitor diagnostic record without `time`"
    else:
        looks = "not a known Azure log shape (Event Hub export, Log Analytics, Graph, Activity Log REST, Event Grid)"
    where = f"; its time is under {', '.join(repr(key) for key in timed[:3])}" if timed else "; it has no time"
    return f"unsupported shape: {looks}{where}"
