"""Pieces every mapper shares: the event skeleton, stable ids, resource fields, final offline context."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import orjson

from shared.normalize.catalog import common_event, operation_description
from shared.normalize.mappers.resource_id import parse_resource_id
from shared.normalized_event import FIELD_NAMES
from shared.values import Record, first_text, severity, text, utc_text

_SKELETON: dict[str, Any] = {**dict.fromkeys(FIELD_NAMES), "common_event": "Other", "action": "other"}


def new_event(source: str, category: str | None, time_value: Any) -> Record:
    """An event with every contract field present (null when absent, or its default) and its time in UTC."""
    event = _SKELETON.copy()
    event["source"] = source
    event["category"] = category
    event["time"] = utc_text(time_value)
    return event


def content_id(record: Record) -> str:
    """A stable id for records that carry none: the hash of the record's canonical bytes."""
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


def set_resource(event: Record, resource_id: Any) -> None:
    """Fill subscription, resource group, provider, type and name from a resource id."""
    if type(resource_id) is not str:
        resource_id = text(resource_id)
        if resource_id is None:
            return
    fields = resource_fields(resource_id)
    if fields is not None:
        event.update(fields)


@lru_cache(maxsize=8192)
def resource_fields(resource_id: str) -> dict[str, str | None] | None:
    """The event fields of a resource id, or None when it is not one; cached (and shared: never mutate
    the result) because the same resources appear in record after record."""
    resource = resource_id.strip()
    if not resource.startswith("/"):
        return None
    parsed = parse_resource_id(resource)
    return {**parsed._asdict(), "resource_id": resource}


CLAIM_UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
_CLAIM_NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
_CLAIM_OBJECT_ID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
_CLAIM_SPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/spn"
CLAIM_TENANT = "http://schemas.microsoft.com/identity/claims/tenantid"


# Claims naming who, best first: long (v1 token) and short names.
# Azure's own callers (Alert, Autoscale) are named only by their service principal name, `spn`.
_ACTOR_CLAIMS = (CLAIM_UPN, "upn", _CLAIM_NAME, "name", "unique_name", _CLAIM_SPN, "spn")
_ACTOR_ID_CLAIMS = (_CLAIM_OBJECT_ID, "oid")


def set_claims(event: Record, claims: Record) -> None:
    """Who, from the token claims Azure copies into Activity Log and resource logs (long or short names)."""
    if not claims:
        return
    event["actor"] = first_text(claims, _ACTOR_CLAIMS)
    event["actor_id"] = first_text(claims, _ACTOR_ID_CLAIMS)
    event["actor_app_id"] = text(claims.get("appid"))
    if event["actor_type"] is None and (claims.get(CLAIM_UPN) or claims.get("upn")):
        event["actor_type"] = "User"


@lru_cache(maxsize=16384)
def action_from_operation(operation: str | None) -> str:
    """The verb of an ARM operation id: `.../WRITE` → create_or_update, `.../DELETE` → delete; readable
    names without a `/` (Entra audit activities, PIM's "Add member to role completed") by their first word."""
    if not operation:
        return "other"
    if "/" not in operation:
        return action_from_words(operation)
    verb = operation.rsplit("/", 1)[-1].upper()
    return _VERBS.get(verb, "other")


_WORD_VERBS = (
    (("add", "create", "register", "invite", "assign"), "create_or_update"),
    (("update", "set", "change", "reset", "enable", "disable", "restore", "consent", "upload"),
     "create_or_update"),
    (("delete", "remove", "hard delete", "revoke"), "delete"),
)


def action_from_words(operation: str | None) -> str:
    """The action of a readable operation name ("Add member to group") by its first word."""
    word = (operation or "").lower()
    for verbs, action in _WORD_VERBS:
        if word.startswith(verbs):
            return action
    return "other"


@lru_cache(maxsize=16384)
def _operation_and_action(operation_name: str) -> tuple[str | None, str]:
    """An `operationName` as written → the upper-cased operation id and its action (cached per name)."""
    operation = text(operation_name)
    if not operation:
        return None, "other"
    operation = operation.upper()
    return operation, action_from_operation(operation)


def set_envelope(event: Record, fields: Record) -> None:
    """The fields every Azure Monitor diagnostic record shares (Activity Log and resource logs alike)."""
    get = fields.get
    name = get("operationName")
    if type(name) is not str:
        name = text(name)  # the REST shape `{"value": ...}`, or a wrong type
    if name:
        event["operation"], event["action"] = _operation_and_action(name)
    level = get("level")
    if level is not None:
        event["severity"] = severity(level)
    event["correlation_id"] = text(get("correlationId"))
    event["region"] = text(get("location"))


_VERBS = {"WRITE": "create_or_update", "DELETE": "delete", "ACTION": "action", "READ": "read"}


def finish(event: Record, status_code: str | None = None) -> Record:
    """Add the offline context (description, common event) once the mapper set the other fields."""
    operation = event["operation"]
    event["operation_description"] = operation_description(operation)
    event["common_event"] = common_event(event["source"], operation, event["action"], event["result"],
                                         event["category"], status_code)
    return event


# The one result vocabulary every mapper writes; vendors' spellings (`Succeeded`, `Failed`, `succeeded.`,
# Graph's `inProgress`) are looked up lower-cased without a trailing period. Others pass through title-cased.
_RESULT_WORDS = {
    "start": "Start", "started": "Start",
    "accept": "Accept", "accepted": "Accept",
    "success": "Success", "succeeded": "Success", "successful": "Success",
    "failure": "Failure", "failed": "Failure", "fail": "Failure", "timeout": "Failure",
    "interrupted": "Interrupted",
    "in progress": "In Progress", "inprogress": "In Progress",
    "canceled": "Canceled", "cancelled": "Canceled",
    "active": "Active", "activated": "Active", "new": "Active", "resolved": "Resolved", "dismissed": "Dismissed",
    "updated": "Updated", "compliant": "Compliant", "noncompliant": "NonCompliant", "non-compliant": "NonCompliant",
}
RESULTS: frozenset[str] = frozenset(_RESULT_WORDS.values())


def result_word(value: Any) -> str | None:
    """A vendor's result in the one vocabulary (`Succeeded.` → `Success`, `Failed` → `Failure`)."""
    if type(value) is str and value in RESULTS:  # already in the vocabulary: most records
        return value
    word = text(value)
    if word is None:
        return None
    lowered = word.lower().rstrip(".")
    known = _RESULT_WORDS.get(lowered)
    if known is not None:
        return known
    if lowered == "none":  # Entra's placeholder `resultSignature`: no result at all
        return None
    return word[:1].upper() + word[1:]


def vendor_result(value: Any, result: str | None) -> str | None:
    """The vendor's spelling when the vocabulary changed more than its casing, kept in
    `details.vendor_result` (`Succeeded`, `0`; not `success`)."""
    if result is None or (type(value) is str and value == result):
        return None
    written = text(value)
    return written if written is not None and written.lower() != result.lower() else None


def note_shape(event: Record, shape: str) -> Record:
    """Say in `details.shape` which shape other than the Event Hub export the event was read from."""
    event["details"] = {**(event["details"] or {}), "shape": shape}
    return event


def compact(values: dict[str, Any]) -> dict[str, Any] | None:
    """Drop empty entries; None when nothing is left (keeps `details` null rather than `{}`)."""
    kept = {key: value for key, value in values.items() if value is not None and value != ""}
    return kept or None
