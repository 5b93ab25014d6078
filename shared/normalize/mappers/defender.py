"""Defender for Cloud continuous export: alerts (`SecurityAlert` shape or ARM `Microsoft.Security/.../alerts`)
and the other security objects the export also sends (assessments, compliance, sub-assessments)."""

from __future__ import annotations

from collections.abc import Callable

from shared.normalize.mappers.common import compact, content_id, finish, new_event, result_word, set_resource
from shared.normalize.mappers.resource_id import region_of
from shared.values import Record, as_dict, first, lower_keys, severity, text, valid_ip


def is_defender(fields: Record) -> bool:
    """Export alerts carry `SystemAlertId`/`AlertDisplayName`; ARM objects a `Microsoft.Security` type."""
    if "SystemAlertId" in fields or "AlertDisplayName" in fields:
        return True
    kind = text(fields.get("type"))
    return kind is not None and kind.lower().startswith("microsoft.security/")


def map_defender(record: Record, fields: Record) -> Record:
    """Defender's casing varies between export and ARM shapes, so this mapper reads lower-cased keys."""
    lowered = lower_keys(record)
    kind = text(lowered.get("type")) or ""
    properties = lower_keys(as_dict(lowered.get("properties")))
    if "systemalertid" in lowered or "alertdisplayname" in lowered:
        return _alert(record, lowered)
    if kind.lower().endswith("/alerts"):
        return _alert(record, {**properties, "id": lowered.get("id"), "name": lowered.get("name")})
    return _security_object(record, lowered, properties, kind)


def _alert(record: Record, alert: Record) -> Record:
    """`alert` holds lower-cased keys of either the export object or the ARM alert's properties."""
    event = new_event("defender", "SecurityAlert",
                      first(alert, "starttimeutc", "timegenerated", "timegeneratedutc", "processingendtime"))
    arm_id = text(alert.get("id"))
    event["alert_id"] = text(first(alert, "systemalertid", "name")) or content_id(record)
    event["event_id"] = event["alert_id"]
    event["alert_name"] = text(first(alert, "alertdisplayname", "alerttype"))
    event["alert_description"] = text(alert.get("description"))
    event["operation"] = text(alert.get("alerttype"))
    event["action"] = "alert"
    event["result"] = result_word(alert.get("status"))
    event["severity"] = severity(alert.get("severity"))
    event["app"] = text(first(alert, "productname", "productcomponentname")) or "Microsoft Defender for Cloud"
    event["tenant_id"] = text(alert.get("tenantid"))
    event["correlation_id"] = text(alert.get("correlationkey"))
    entities = alert.get("entities")
    if isinstance(entities, list):
        event["alert_entities"] = [entity for entity in entities if isinstance(entity, dict)]
        event["source_ip"] = _entity_value(event["alert_entities"], "ip", lambda ip: valid_ip(ip.get("address")))
        event["actor"] = _entity_value(event["alert_entities"], "account",
                                       lambda account: text(first(account, "name", "displayname")))
    set_resource(event, first(alert, "azureresourceid", "compromisedentityid") or _resource_of(alert))
    if event["resource_id"] is None and arm_id:
        set_resource(event, arm_id)
    event["region"] = region_of(arm_id) or text(alert.get("location"))
    event["details"] = compact({
        "alert_severity": text(alert.get("severity")),
        "compromised_entity": text(alert.get("compromisedentity")),
        "intent": text(alert.get("intent")),
        "alert_uri": text(alert.get("alerturi")),
        "remediation_steps": alert.get("remediationsteps"),
        "end_time": text(alert.get("endtimeutc")),
        "arm_id": arm_id,
    })
    return finish(event)


def _resource_of(alert: Record) -> str | None:
    for identifier in alert.get("resourceidentifiers") or ():
        if isinstance(identifier, dict):
            resource = text(lower_keys(identifier).get("azureresourceid"))
            if resource:
                return resource
    return None


def _entity_value(entities: list[Record], kind: str, read: Callable[[Record], str | None]) -> str | None:
    """The first usable value of the first entities of one kind (`ip`, `account`) in an alert."""
    for entity in entities:
        lowered = lower_keys(entity)
        if str(lowered.get("type", "")).lower() == kind:
            value = read(lowered)
            if value:
                return value
    return None


def _security_object(record: Record, lowered: Record, properties: Record, kind: str) -> Record:
    """Assessments and compliance results: the state of a control, mapped for completeness."""
    enrichment = lower_keys(as_dict(first(lowered, "securityeventdataenrichment",
                                          "assessmenteventdataenrichment")))
    status = lower_keys(as_dict(properties.get("status")))
    moment = (first(status, "statuschangedate", "firstevaluationdate")
              or first(properties, "timegenerated", "time") or first(lowered, "time", "timegenerated"))
    event = new_event("defender", kind or "Microsoft.Security", moment)
    event["event_id"] = content_id(record)
    event["operation"] = kind.upper() if kind else None
    verb = text(enrichment.get("action"))
    event["action"] = {"write": "create_or_update", "delete": "delete"}.get((verb or "").lower(), "other")
    event["result"] = result_word(first(status, "code") or properties.get("state"))
    event["tenant_id"] = text(lowered.get("tenantid"))
    event["app"] = "Microsoft Defender for Cloud"
    resource = first(lower_keys(as_dict(properties.get("resourcedetails"))), "id", "resourceid")
    set_resource(event, resource or lowered.get("id"))
    event["details"] = compact({
        "display_name": text(first(properties, "displayname", "description")),
        "severity": text(first(lower_keys(as_dict(properties.get("metadata"))), "severity")),
        "object_id": text(lowered.get("id")),
    })
    return finish(event)

