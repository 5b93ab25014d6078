"""Mapping Azure log records to normalized events: envelope splitting and dispatch by real category."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from shared.normalize.mappers.activity import CATEGORIES, OPERATION_TYPE_CATEGORIES, map_activity
from shared.normalize.mappers.common import content_id
from shared.normalize.mappers.defender import is_defender, map_defender
from shared.normalize.mappers.identity import AUDIT_CATEGORIES, SIGNIN_CATEGORIES, map_audit, map_signin
from shared.normalize.mappers.resource import POLICY_EVENT_PREFIX, map_policy_state, map_resource_log
from shared.values import MappingError, Record, spelled_fields, text

__all__ = ["MappingError", "map_record", "split_body"]

_BOM = b"\xef\xbb\xbf"


def split_body(body: bytes) -> list[Any]:
    """The records of one Event Hub body: an envelope `{"records": [...]}`, an array, or one object.

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
            return [document]
        records = document[records_key]
        if not isinstance(records, list):
            raise MappingError(f"'records' is not a list but {_json_type(records)}")
        return records
    raise MappingError(f"body is neither an object nor an array but {_json_type(document)}")


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
    """By the real category as written (`Administrative`, `SignInLogs`: one lookup), else normalized,
    else by the record's shape."""
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
    # The spellings Azure writes, so most records find their mapper without lower-casing.
    spelled = {name: key for key, name in CATEGORIES.items()}
    spelled |= {key.capitalize(): key for key in OPERATION_TYPE_CATEGORIES}
    spelled |= {name: key for key, (name, _) in SIGNIN_CATEGORIES.items()}
    spelled |= {name: key for key, name in AUDIT_CATEGORIES.items()}
    return mappers | {name: mappers[key] for name, key in spelled.items()}


_BY_CATEGORY = _by_category()


def _mapper_by_shape(fields: Record) -> Mapper:
    """Records without a known category: Defender objects, policy state events, other resource logs."""
    if is_defender(fields):
        return map_defender
    event_type = text(fields.get("eventType"))
    if event_type and event_type.lower().startswith(POLICY_EVENT_PREFIX):
        return map_policy_state
    return map_resource_log
