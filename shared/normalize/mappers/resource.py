"""Azure Policy state events (Event Grid schema) and the generic fallback for any other resource log."""

from __future__ import annotations

from shared.normalize.mappers.activity import map_activity
from shared.normalize.mappers.common import (
    compact,
    content_id,
    finish,
    new_event,
    result_word,
    set_claims,
    set_envelope,
    set_resource,
)
from shared.values import Record, as_dict, first, text, valid_ip

POLICY_EVENT_PREFIX = "microsoft.policyinsights."


def map_policy_state(record: Record, fields: Record) -> Record:
    """`Microsoft.PolicyInsights.PolicyStateCreated/Changed/Deleted` events from an Event Grid topic."""
    data = as_dict(fields.get("data"))
    event = new_event("policy", text(fields.get("eventType")),
                      first(data, "timestamp") or first(fields, "eventTime", "time"))
    event["event_id"] = text(fields.get("id")) or content_id(record)
    event["operation"] = (text(fields.get("eventType")) or "").upper() or None
    event["action"] = "policy"
    event["result"] = result_word(data.get("complianceState"))
    event["result_reason"] = text(data.get("complianceReasonCode"))
    event["policy_assignment"] = text(data.get("policyAssignmentId"))
    event["policy_definition"] = text(data.get("policyDefinitionId"))
    set_resource(event, fields.get("subject"))
    if event["subscription_id"] is None:
        event["subscription_id"] = (text(data.get("subscriptionId")) or "").lower() or None
    event["details"] = compact({
        "policy_definition_reference_id": text(data.get("policyDefinitionReferenceId")),
    })
    return finish(event)


def map_resource_log(record: Record, fields: Record) -> Record:
    """Any other resource log: the common diagnostic-log fields, the rest stays in `raw`."""
    category = text(fields.get("category"))
    properties = as_dict(fields.get("properties"))
    if "eventCategory" in properties or any(key.lower() == "eventcategory" for key in properties):
        # An Activity Log record with an unfamiliar category still has the activity shape.
        return map_activity(category or "Administrative", record, fields)
    event = new_event("resource", category, first(fields, "time", "timestamp", "timeGenerated"))
    event["event_id"] = content_id(record)
    set_envelope(event, fields)
    event["result"] = result_word(first(fields, "resultType", "resultSignature"))
    event["result_reason"] = text(fields.get("resultDescription"))
    event["tenant_id"] = text(fields.get("tenantId"))
    set_resource(event, fields.get("resourceId"))
    identity = as_dict(fields.get("identity"))
    claims = as_dict(identity.get("claims") or identity.get("claim"))  # Key Vault writes `claim`
    set_claims(event, claims)
    event["actor"] = event["actor"] or text(fields.get("caller"))
    event["source_ip"] = valid_ip(fields.get("callerIpAddress"))
    event["details"] = compact({"duration_ms": text(fields.get("durationMs"))})
    return finish(event)
