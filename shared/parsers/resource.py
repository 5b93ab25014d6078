"""Azure Policy state events (Event Grid schema) and the generic fallback for any other resource log."""

from __future__ import annotations

from shared.parsers.activity import map_activity
from shared.parsers.common import (
    compact,
    content_id,
    finish,
    new_event,
    set_claims,
    set_envelope,
    set_resource,
)
from shared.parsers.values import Record, as_dict, first, text, title, valid_ip

POLICY_EVENT_PREFIX = "microsoft.policyinsights."


def map_policy_state(record: Record, lowered: Record) -> Record:
    """`Microsoft.PolicyInsights.PolicyStateCreated/Changed/Deleted` events from an Event Grid topic."""
    data = as_dict(lowered.get("data"))
    event = new_event("policy", text(lowered.get("eventtype")),
                      first(data, "timestamp") or first(lowered, "eventtime", "time"))
    event["event_id"] = text(lowered.get("id")) or content_id(record)
    event["operation"] = (text(lowered.get("eventtype")) or "").upper() or None
    event["action"] = "policy"
    event["result"] = title(data.get("complianceState"))
    event["result_reason"] = text(data.get("complianceReasonCode"))
    event["policy_assignment"] = text(data.get("policyAssignmentId"))
    event["policy_definition"] = text(data.get("policyDefinitionId"))
    set_resource(event, lowered.get("subject"))
    if event["subscription_id"] is None:
        event["subscription_id"] = (text(data.get("subscriptionId")) or "").lower() or None
    event["details"] = compact({
        "policy_definition_reference_id": text(data.get("policyDefinitionReferenceId")),
    })
    return finish(event)


def map_resource_log(record: Record, lowered: Record) -> Record:
    """Any other resource log: the common diagnostic-log fields, the rest stays in `raw`."""
    category = text(lowered.get("category"))
    properties = as_dict(lowered.get("properties"))
    if "eventcategory" in (key.lower() for key in properties):
        # An Activity Log record with an unfamiliar category still has the activity shape.
        return map_activity(record, lowered, category or "Administrative")
    event = new_event("resource", category, first(lowered, "time", "timestamp", "timegenerated"))
    event["event_id"] = content_id(record)
    set_envelope(event, lowered)
    event["result"] = title(first(lowered, "resulttype", "resultsignature"))
    event["result_reason"] = text(lowered.get("resultdescription"))
    event["tenant_id"] = text(lowered.get("tenantid"))
    set_resource(event, lowered.get("resourceid"))
    identity = as_dict(lowered.get("identity"))
    claims = as_dict(identity.get("claims") or identity.get("claim"))  # Key Vault writes `claim`
    set_claims(event, claims)
    event["actor"] = event["actor"] or text(lowered.get("caller"))
    event["source_ip"] = valid_ip(lowered.get("calleripaddress"))
    event["details"] = compact({"duration_ms": text(lowered.get("durationms"))})
    return finish(event)
