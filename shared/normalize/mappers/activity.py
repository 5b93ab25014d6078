"""Activity Log records (all eight categories) as exported by a subscription diagnostic setting.

The `Security` category carries Defender for Cloud alerts and the `Policy` category Azure Policy
evaluations: they share the activity envelope, so they are mapped here with source `defender`/`policy`.
"""

from __future__ import annotations

from typing import Any

from shared.normalize.mappers.common import (
    CLAIM_TENANT,
    CLAIM_UPN,
    finish,
    new_event,
    result_word,
    set_claims,
    set_envelope,
    set_resource,
    vendor_result,
)
from shared.normalize.mappers.resource_id import region_of
from shared.values import (
    Record,
    as_dict,
    first,
    int64,
    parse_json_text,
    severity,
    text,
    valid_ip,
)

CATEGORIES = {
    name.lower(): name
    for name in ("Administrative", "Security", "Policy", "ServiceHealth", "ResourceHealth", "Alert",
                 "Autoscale", "Recommendation")
}
# Exports put the operation type in `category` and the real category in `properties.eventCategory`.
OPERATION_TYPE_CATEGORIES = frozenset({"write", "delete", "action", "read"})

_PRINCIPAL_TYPES = {
    "user": "User", "serviceprincipal": "ServicePrincipal", "managedidentity": "ManagedIdentity",
    "application": "Application", "app": "ServicePrincipal",
}
_PRINCIPAL_TYPES_AS_WRITTEN = {name: name for name in _PRINCIPAL_TYPES.values()}
_NO_CLAIMS: Record = {}
_SOURCES = {"Security": "defender", "Policy": "policy"}
# Categories written by Azure itself rather than by a caller.
_SYSTEM_CATEGORIES = frozenset({"ServiceHealth", "ResourceHealth", "Alert", "Autoscale", "Recommendation"})


def map_activity(category: str, record: Record, fields: Record) -> Record:
    """Map one Activity Log record whose real category is already known.

    Written with local lookups and few helper calls, because this mapper carries most of the traffic
    and normalize's cost is counted in Python operations per record.
    """
    get = fields.get
    properties = as_dict(get("properties"))
    prop = properties.get
    source = _SOURCES.get(category, "activity")
    event = new_event(source, category, get("time") or get("eventTimestamp"))
    set_envelope(event, fields)
    written_result = get("resultType") or get("status")
    result = event["result"] = result_word(written_result)
    event["event_id"] = text(prop("eventDataId")) or text(get("eventDataId"))
    set_resource(event, get("resourceId") or prop("entity"))
    _set_caller(event, fields, properties, category)
    status_code = text(prop("statusCode"))
    if result == "Failure":
        event["result_reason"] = _failure_reason(fields, properties)
    event["details"] = _details(fields, properties, status_code)
    if result is not written_result and (written := vendor_result(written_result, result)):
        event["details"] = {**(event["details"] or {}), "vendor_result": written}
    if source == "defender":
        _set_security_alert(event, properties, fields)
    elif source == "policy":
        _set_policy(event, properties)
    return finish(event, status_code)


def _details(fields: Record, properties: Record, status_code: str | None) -> Record | None:
    """What an analyst reads beyond the contract fields: only the entries present, None when none is."""
    prop = properties.get
    details: Record = {}
    if status_code:
        details["status_code"] = status_code
    duration = fields.get("durationMs")
    if duration is not None and (duration := _duration(duration)) is not None:
        details["duration_ms"] = duration
    request_body = prop("requestbody")
    if request_body is not None and (request_body := parse_json_text(request_body)) != "":
        details["request_body"] = request_body
    summary = prop("title")
    if summary is not None and (summary := text(summary)):
        details["title"] = summary
    description = prop("description") or prop("communication") or prop("details")
    if description is not None and (description := text(description)):
        details["description"] = description
    hierarchy = prop("hierarchy")
    if hierarchy is not None and (hierarchy := text(hierarchy)):
        details["hierarchy"] = hierarchy
    event_properties = prop("eventProperties")
    if event_properties is not None and (event_properties := parse_json_text(event_properties)):
        # Alert, ResourceHealth and ServiceHealth records (REST shape) keep their content here.
        details["event_properties"] = event_properties
    return details or None


def _set_caller(event: Record, fields: Record, properties: Record, category: str) -> None:
    """Who: token claims (users), the caller (service principals), or the system for Azure's own events."""
    get = fields.get
    identity = get("identity")
    claims: Record = _NO_CLAIMS
    if type(identity) is dict:
        written_claims = identity.get("claims")
        if type(written_claims) is dict:
            claims = written_claims
        event["actor_type"] = _actor_type(identity, claims)
        set_claims(event, claims)
    # Service principals have no UPN: the caller (their object id) or the app id names them; PIM writes
    # the caller only in `properties.CallerInfo`.
    event["actor"] = (event["actor"] or text(get("caller"))
                      or (text(identity) if isinstance(identity, str) else None)
                      or event["actor_app_id"] or text(properties.get("CallerInfo")))
    event["tenant_id"] = (text(get("tenantId")) or text(claims.get(CLAIM_TENANT))
                          or text(properties.get("TenantID")))
    event["source_ip"] = valid_ip(get("callerIpAddress")) or valid_ip(claims.get("ipaddr"))
    if event["actor_type"] is None and category in _SYSTEM_CATEGORIES and (
            event["actor"] is None or event["actor"].lower().startswith("microsoft.")):
        event["actor_type"] = "System"


def _actor_type(identity: Record, claims: Record) -> str | None:
    """The caller's kind from its token: a UPN or `idtyp` says it; only without them the role
    assignment's `authorization.evidence.principalType` (which names the assignee, e.g. a group)."""
    if claims.get(CLAIM_UPN) or claims.get("upn"):
        return "User"
    token_type = claims.get("idtyp")
    if token_type is not None and (token_type := text(token_type)):
        return _PRINCIPAL_TYPES.get(token_type.lower())
    authorization = identity.get("authorization")
    evidence = authorization.get("evidence") if type(authorization) is dict else None
    written = evidence.get("principalType") if type(evidence) is dict else None
    # Azure writes `User`, `ServicePrincipal`...: one lookup; other spellings go through `text` and lower().
    actor_type = _PRINCIPAL_TYPES_AS_WRITTEN.get(written) if type(written) is str else None
    if actor_type is None and (principal_type := text(written)):
        actor_type = _PRINCIPAL_TYPES.get(principal_type.lower())
    return actor_type


def _failure_reason(fields: Record, properties: Record) -> str | None:
    message = parse_json_text(properties.get("statusMessage"))
    if isinstance(message, dict):
        error = as_dict(message.get("error"))
        code, detail = text(error.get("code")), text(error.get("message"))
        if code or detail:
            return ": ".join(part for part in (code, detail) if part)
    return text(fields.get("resultSignature")) or text(properties.get("statusCode")) or text(message)


def _duration(value: Any) -> int | None:
    """Whole milliseconds; None for what is not a number JSON can carry as an integer (events are encoded
    with orjson, which stops at 64 bits, and `"1e400"` is infinite)."""
    try:
        return int64(int(float(value))) if value is not None and value != "" else None
    except (TypeError, ValueError, OverflowError):  # OverflowError: "inf", 1e400
        return None


def _set_security_alert(event: Record, properties: Record, fields: Record) -> None:
    """Defender for Cloud alerts in the Activity Log: the alert sits in `properties`."""
    event["action"] = "alert"
    event["alert_id"] = (text(first(properties, "alertId", "systemAlertId", "AlertId", "operationId"))
                         or event["event_id"])
    event["alert_name"] = (text(first(properties, "alertDisplayName", "alert_name", "eventName", "AlertDisplayName",
                                      "alertType")) or text(fields.get("eventName"))
                           or text(fields.get("operationName")))
    event["alert_description"] = (text(first(properties, "alertDescription", "alert_description", "description"))
                                  or text(first(fields, "description", "resultDescription")))
    if event["resource_group"] is None:
        group = text(first(fields, "resourceGroupName") or properties.get("resourceGroupName"))
        event["resource_group"] = group if group and group.lower() != "unknown" else None
    if event["region"] in (None, "global"):
        # The alert's own id says where it was raised: `.../providers/Microsoft.Security/locations/<region>/alerts/...`
        event["region"] = region_of(event["resource_id"]) or event["region"]
    event["severity"] = severity(first(properties, "severity", "Severity")) or event["severity"]
    event["app"] = text(properties.get("productName")) or "Microsoft Defender for Cloud"
    compromised = text(first(properties, "compromisedEntity", "CompromisedEntity"))
    if compromised:
        event["details"] = {**(event["details"] or {}), "compromised_entity": compromised}
    entities = properties.get("entities")
    if isinstance(entities, list):
        event["alert_entities"] = [entity for entity in entities if isinstance(entity, dict)]


def _set_policy(event: Record, properties: Record) -> None:
    """Azure Policy evaluations: `properties.policies` is a JSON array inside a string."""
    event["action"] = "policy"
    policies = parse_json_text(properties.get("policies"))
    if isinstance(policies, dict):
        policies = [policies]
    if not isinstance(policies, list) or not policies:
        return
    policy = as_dict(policies[0])
    # Azure writes these ids with a trailing slash; drop it so they compare equal to other ids.
    event["policy_assignment"] = _id(first(policy, "policyAssignmentId", "policyAssignmentName"))
    event["policy_definition"] = _id(first(policy, "policyDefinitionId", "policyDefinitionName"))
    event["policy_effect"] = text(policy.get("policyDefinitionEffect"))
    if len(policies) > 1:
        event["details"] = {**(event["details"] or {}), "policies": policies}


def _id(value: Any) -> str | None:
    identifier = text(value)
    return identifier.rstrip("/") or None if identifier else None
