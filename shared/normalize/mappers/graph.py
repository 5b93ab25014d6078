"""Microsoft Graph objects, as `az rest`, Graph exports and SOAR tools write them: `signIn`,
`directoryAudit`, `riskDetection` and the security `alert` (v2).

Sign-ins and directory audits are the very objects the Event Hub export nests in `properties`, so they
are wrapped and mapped by the Entra mappers; risk detections and alerts have mappers of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.normalize.mappers.common import (
    compact,
    content_id,
    finish,
    new_event,
    note_shape,
    result_word,
    set_resource,
    vendor_result,
)
from shared.normalize.mappers.identity import map_audit, map_signin
from shared.values import Record, as_dict, first, parse_json_text, severity, text, valid_ip

SHAPE = "graph"
_ODATA_PREFIX = "#microsoft.graph."
# `signInEventTypes` (beta) → the sign-in log that holds such sign-ins.
_SIGNIN_LOGS = {
    "interactiveuser": "signinlogs", "noninteractiveuser": "noninteractiveusersigninlogs",
    "serviceprincipal": "serviceprincipalsigninlogs", "managedidentity": "managedidentitysigninlogs",
}


def graph_kind(fields: Record) -> str | None:
    """`signIn`, `directoryAudit`, `riskDetection` or `security.alert` by `@odata.type`, else by the
    properties only that resource type has; None when the record is none of them."""
    odata = text(fields.get("@odata.type"))
    if odata and odata.lower().startswith(_ODATA_PREFIX):
        kind = odata[len(_ODATA_PREFIX):]
        return kind if kind in _MAPPERS else None
    if "riskEventType" in fields and ("detectedDateTime" in fields or "activityDateTime" in fields):
        return "riskDetection"
    if "activityDateTime" in fields and "activityDisplayName" in fields:
        return "directoryAudit"
    if "createdDateTime" in fields and ("serviceSource" in fields or "detectionSource" in fields):
        return "security.alert"
    if "createdDateTime" in fields and ("userPrincipalName" in fields or "servicePrincipalId" in fields):
        return "signIn"
    return None


def map_graph(kind: str, record: Record, fields: Record) -> Record:
    return note_shape(_MAPPERS[kind](record, fields), SHAPE)


def _sign_in(record: Record, fields: Record) -> Record:
    types = fields.get("signInEventTypes")
    written = text(types[0]) if isinstance(types, list) and types else None
    key = _SIGNIN_LOGS.get((written or "").lower())
    if key is None:
        key = "serviceprincipalsigninlogs" if not fields.get("userPrincipalName") and fields.get(
            "servicePrincipalId") else "signinlogs"
    export = {"time": fields.get("createdDateTime"), "properties": fields,
              "tenantId": first(fields, "homeTenantId", "resourceTenantId")}
    return map_signin(key, record, export)


def _directory_audit(record: Record, fields: Record) -> Record:
    return map_audit("auditlogs", record, {"time": fields.get("activityDateTime"), "properties": fields})


def map_user_risk_event(record: Record, fields: Record) -> Record:
    """The Event Hub export's `UserRiskEvents` category: a riskDetection object in `properties`."""
    event = _risk_detection(record, as_dict(fields.get("properties")), fields.get("time"))
    event["tenant_id"] = text(fields.get("tenantId"))
    return event


def _risk_detection(record: Record, fields: Record, exported_at: Any = None) -> Record:
    """An Identity Protection risk detection: an alert about a user's sign-in or account."""
    get = fields.get
    event = new_event("signin", "UserRiskEvents",
                      first(fields, "detectedDateTime", "activityDateTime") or exported_at)
    event["event_id"] = text(get("id")) or content_id(record)
    risk_type = text(get("riskEventType"))
    event["operation"] = risk_type.upper() if risk_type else None
    event["action"] = "alert"
    event["alert_id"] = event["event_id"]
    event["alert_name"] = risk_type
    event["risk_level"] = text(get("riskLevel"))
    event["risk_state"] = text(get("riskState"))
    event["risk_event_types"] = [risk_type] if risk_type else None
    event["actor"] = text(first(fields, "userPrincipalName", "userDisplayName"))
    event["actor_id"] = text(get("userId"))
    event["actor_type"] = "User"
    event["source_ip"] = valid_ip(get("ipAddress"))
    event["correlation_id"] = text(get("correlationId"))
    location = as_dict(get("location"))
    event["details"] = compact({
        "risk_detail": text(get("riskDetail")),
        "detection_source": text(get("source")),
        "detection_timing": text(get("detectionTimingType")),
        "activity": text(get("activity")),
        "request_id": text(get("requestId")),
        "country": text(location.get("countryOrRegion")),
        "city": text(location.get("city")),
        "additional_info": _parsed(get("additionalInfo")),
    })
    return finish(event)


def _security_alert(record: Record, fields: Record) -> Record:
    """A Microsoft Graph security alert (v2), from Defender XDR or any product it gathers."""
    get = fields.get
    event = new_event("defender", "SecurityAlert", first(fields, "firstActivityDateTime", "createdDateTime"))
    event["event_id"] = event["alert_id"] = text(get("id")) or content_id(record)
    event["alert_name"] = text(get("title"))
    event["alert_description"] = text(get("description"))
    event["operation"] = text(first(fields, "detectorId", "title"))
    event["action"] = "alert"
    written = get("status")
    event["result"] = result_word(written)
    event["severity"] = severity(get("severity"))
    event["app"] = text(first(fields, "productName", "serviceSource")) or "Microsoft Defender"
    event["tenant_id"] = text(get("tenantId"))
    evidence = [item for item in get("evidence") or () if isinstance(item, dict)]
    event["alert_entities"] = evidence or None
    event["source_ip"] = next((ip for item in evidence if (ip := valid_ip(item.get("ipAddress")))), None)
    event["actor"] = next((name for item in evidence if (name := _account(item))), None)
    set_resource(event, next((item.get("resourceId") for item in evidence if item.get("resourceId")), None))
    event["details"] = compact({
        "vendor_result": vendor_result(written, event["result"]),
        "alert_severity": text(get("severity")),
        "tactic": text(get("category")),
        "mitre_techniques": get("mitreTechniques") or None,
        "classification": text(get("classification")),
        "determination": text(get("determination")),
        "service_source": text(get("serviceSource")),
        "detection_source": text(get("detectionSource")),
        "incident_id": text(get("incidentId")),
        "alert_uri": text(get("alertWebUrl")),
        "recommended_actions": text(get("recommendedActions")),
    })
    return finish(event)


def _account(evidence: Record) -> str | None:
    return text(first(as_dict(evidence.get("userAccount")), "userPrincipalName", "accountName", "displayName"))


def _parsed(value: Any) -> Any:
    parsed = parse_json_text(value)
    return parsed if parsed not in ("", None) else None


_MAPPERS: dict[str, Callable[[Record, Record], Record]] = {
    "signIn": _sign_in,
    "directoryAudit": _directory_audit,
    "riskDetection": _risk_detection,
    "security.alert": _security_alert,
}
