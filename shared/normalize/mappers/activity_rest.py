"""The Activity Log REST shape: what `az monitor activity-log list` and the Activity Log API return.

It carries the same facts as the Event Hub export under other names (`eventTimestamp`, top-level
`claims` and `authorization`, `status`/`subStatus` and `{value, localizedValue}` objects,
`httpRequest.clientIpAddress`), so it is renamed to the export shape and mapped by `map_activity`.
"""

from __future__ import annotations

from shared.normalize.mappers.activity import CATEGORIES, map_activity
from shared.normalize.mappers.common import note_shape
from shared.values import Record, as_dict, text


def is_activity_rest(fields: Record) -> bool:
    """REST records have `eventTimestamp` and `submissionTimestamp` where exports have `time`."""
    return "eventTimestamp" in fields and ("submissionTimestamp" in fields or "eventDataId" in fields)


def map_activity_rest(record: Record, fields: Record) -> Record:
    get = fields.get
    category = text(get("category")) or "Administrative"
    properties = {**as_dict(get("properties")), "eventCategory": category, "eventDataId": get("eventDataId")}
    export = {
        "time": get("eventTimestamp"),
        "resourceId": get("resourceId"),
        "operationName": text(get("operationName")),
        "resultType": text(get("status")),
        "resultSignature": text(get("subStatus")),
        "callerIpAddress": as_dict(get("httpRequest")).get("clientIpAddress"),
        "correlationId": get("correlationId"),
        "level": text(get("level")),
        "tenantId": get("tenantId"),
        "caller": get("caller"),
        "identity": {"claims": as_dict(get("claims")), "authorization": as_dict(get("authorization"))},
        "eventName": text(get("eventName")),
        "description": get("description"),
        "resourceGroupName": get("resourceGroupName"),
        "properties": properties,
    }
    event = map_activity(CATEGORIES.get(category.lower(), category), record, export)
    return note_shape(event, "activity_log_rest")
