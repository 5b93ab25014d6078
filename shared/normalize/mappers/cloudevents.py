"""Event Grid events, in the CloudEvents 1.0 schema or Event Grid's own: Azure Policy state events.

Both schemas carry the same event under other names (`type`/`eventType`, `time`/`eventTime`); the
CloudEvents form is renamed to the Event Grid one and mapped by `map_policy_state`. Other event types
are refused with a reason that names them: no mapper knows what they mean.
"""

from __future__ import annotations

from shared.normalize.mappers.common import note_shape
from shared.normalize.mappers.resource import POLICY_EVENT_PREFIX, map_policy_state
from shared.values import MappingError, Record, text


def is_cloud_event(fields: Record) -> bool:
    """CloudEvents 1.0 requires `specversion`; Event Grid's schema has `eventType` with `eventTime`."""
    return "specversion" in fields or ("eventType" in fields and "eventTime" in fields)


def map_event_grid(record: Record, fields: Record) -> Record:
    cloud = "specversion" in fields
    event_type = text(fields.get("type") if cloud else fields.get("eventType")) or ""
    if not event_type.lower().startswith(POLICY_EVENT_PREFIX):
        schema = "a CloudEvents event" if cloud else "an Event Grid event"
        raise MappingError(f"unsupported shape: {schema} of type {event_type or 'none'!r}; only Azure Policy "
                           "state events (Microsoft.PolicyInsights.*) are mapped")
    if not cloud:
        return map_policy_state(record, fields)
    grid = {"eventType": event_type, "eventTime": fields.get("time"), "subject": fields.get("subject"),
            "id": fields.get("id"), "data": fields.get("data")}
    return note_shape(map_policy_state(record, grid), "cloudevents")
