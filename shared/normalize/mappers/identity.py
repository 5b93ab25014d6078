"""Entra ID sign-in logs (four categories) and audit logs, as exported by the tenant diagnostic setting."""

from __future__ import annotations

from typing import Any

from shared.normalize.mappers.common import (
    action_from_words,
    compact,
    content_id,
    finish,
    new_event,
    result_word,
    set_resource,
    vendor_result,
)
from shared.values import (
    Record,
    as_dict,
    copy_texts,
    first,
    int64,
    nested,
    severity,
    text,
    valid_ip,
)

SIGNIN_CATEGORIES = {
    "signinlogs": ("SignInLogs", "User"),
    "noninteractiveusersigninlogs": ("NonInteractiveUserSignInLogs", "User"),
    "serviceprincipalsigninlogs": ("ServicePrincipalSignInLogs", "ServicePrincipal"),
    "managedidentitysigninlogs": ("ManagedIdentitySignInLogs", "ManagedIdentity"),
    "microsoftserviceprincipalsigninlogs": ("MicrosoftServicePrincipalSignInLogs", "ServicePrincipal"),
}
AUDIT_CATEGORIES = {"auditlogs": "AuditLogs"}

# Error codes that mean "more is needed from the user" (MFA, consent, password change), not a failure.
_INTERRUPT_CODES = frozenset({50055, 50058, 50072, 50074, 50076, 50079, 50097, 50125, 50140, 50158,
                              65001, 81010, 81012, 81014})
_NOT_MFA = frozenset({"password", "previously satisfied", "password hash sync", "pass-through auth"})


def map_signin(category_key: str, record: Record, fields: Record) -> Record:
    """Map one sign-in record (interactive, non-interactive, service principal or managed identity).

    Straight-line, like `map_activity`: sign-ins are the second largest share of traffic.
    """
    category, actor_type = SIGNIN_CATEGORIES[category_key]
    get = fields.get
    signin = as_dict(get("properties"))
    field = signin.get
    event = new_event("signin", category, field("createdDateTime") or get("time"))
    event["event_id"] = text(field("id")) or content_id(record)
    event["operation"] = (text(get("operationName")) or "Sign-in activity").upper()
    event["action"] = "sign_in"
    status = as_dict(field("status"))
    error_code = _int(status.get("errorCode") if status else get("resultType"))
    if error_code is None:
        event["result"] = None
    elif error_code == 0:
        event["result"] = "Success"
    else:
        event["result"] = "Interrupted" if error_code in _INTERRUPT_CODES else "Failure"
        reason = text(status.get("failureReason")) or text(get("resultDescription"))
        event["result_reason"] = f"{error_code}: {reason}" if reason else str(error_code)
    event["severity"] = severity(get("level"))
    event["actor"] = text(field("userPrincipalName") or field("servicePrincipalName") or field("userDisplayName"))
    event["actor_id"] = text(field("userId") or field("servicePrincipalId"))
    event["actor_type"] = actor_type
    event["actor_app_id"] = text(field("appId"))
    event["user_agent"] = text(field("userAgent"))
    event["app"] = text(field("appDisplayName"))
    event["auth_requirement"] = text(field("authenticationRequirement"))
    event["risk_state"] = text(field("riskState"))
    event["source_ip"] = valid_ip(field("ipAddress")) or valid_ip(get("callerIpAddress"))
    event["tenant_id"] = text(get("tenantId")) or text(field("homeTenantId"))
    event["correlation_id"] = text(field("correlationId") or get("correlationId"))
    event["mfa_method"] = _mfa_method(signin)
    event["conditional_access"] = _conditional_access(field("appliedConditionalAccessPolicies"))
    event["risk_level"] = _risk_level(field("riskLevelDuringSignIn"), field("riskLevelAggregated"))
    risk_types = field("riskEventTypes_v2") or field("riskEventTypes")
    if isinstance(risk_types, list):
        event["risk_event_types"] = [str(item) for item in risk_types if item is not None]
    set_resource(event, get("resourceId"))
    event["details"] = _signin_details(signin, error_code)
    return finish(event)


_LOCATION_DETAILS = (("country", "countryOrRegion"), ("city", "city"))
_CLIENT_DETAILS = (("client_app", "clientAppUsed"), ("resource", "resourceDisplayName"))
_ACCESS_DETAILS = (("conditional_access_status", "conditionalAccessStatus"),)
_DEVICE_DETAILS = tuple((name, name) for name in ("operatingSystem", "browser", "deviceId", "isCompliant", "trustType"))


def _signin_details(signin: Record, error_code: int | None) -> Record | None:
    """Where from, with what client and device: only the entries present, None when none is."""
    details: Record = {} if error_code is None else {"error_code": error_code}
    location = signin.get("location")
    if type(location) is dict:
        copy_texts(details, location, _LOCATION_DETAILS)
    copy_texts(details, signin, _CLIENT_DETAILS)
    interactive = signin.get("isInteractive")
    if interactive is not None and interactive != "":
        details["is_interactive"] = interactive
    copy_texts(details, signin, _ACCESS_DETAILS)
    device = signin.get("deviceDetail")
    if type(device) is dict:
        device_details: Record = {}
        copy_texts(device_details, device, _DEVICE_DETAILS)
        if device_details:
            details["device"] = device_details
    return details or None


def _int(value: Any) -> int | None:
    try:
        return int64(int(value)) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


_RISK_ORDER = {"none": 0, "low": 1, "medium": 2, "high": 3}


def _risk_level(during: Any, aggregated: Any) -> str | None:
    """The higher of the sign-in's and the aggregated risk: `none` during sign-in must not hide an
    aggregated `low`; `hidden` and unknown values only when nothing ranked is present."""
    if aggregated is None or aggregated == during:  # most sign-ins: one value, or both the same
        return text(during)
    written = [level for level in (text(during), text(aggregated)) if level]
    ranked = [level for level in written if level.lower() in _RISK_ORDER]
    if ranked:
        return max(ranked, key=lambda level: _RISK_ORDER[level.lower()])
    return written[0] if written else None


def _mfa_method(signin: Record) -> str | None:
    for step in signin.get("authenticationDetails") or ():
        if isinstance(step, dict) and step.get("succeeded"):
            method = text(step.get("authenticationMethod"))
            if method and method.lower() not in _NOT_MFA:
                return method
    return text(nested(signin, "mfaDetail", "authMethod"))


def _conditional_access(policies: Any) -> list[dict[str, str | None]] | None:
    if not isinstance(policies, list):
        return None
    applied = [{"name": text(policy.get("displayName")), "result": text(policy.get("result"))}
               for policy in policies if isinstance(policy, dict)]
    return applied or None


def map_audit(category_key: str, record: Record, fields: Record) -> Record:
    audit = as_dict(fields.get("properties"))
    event = new_event("audit", AUDIT_CATEGORIES[category_key],
                      first(audit, "activityDateTime") or fields.get("time"))
    event["event_id"] = text(audit.get("id")) or content_id(record)
    operation = text(audit.get("activityDisplayName")) or text(fields.get("operationName"))
    event["operation"] = operation.upper() if operation else None
    event["action"] = action_from_words(operation)
    written_result = audit.get("result")
    if written_result is None or written_result == "":
        written_result = fields.get("resultSignature")
    code_name = _AUDIT_RESULT_CODES.get(text(written_result) or "")
    result = event["result"] = result_word(code_name if code_name is not None else written_result)
    reason = text(audit.get("resultReason"))
    if result != "Success":
        reason = reason or text(fields.get("resultDescription"))
    event["result_reason"] = reason
    event["severity"] = severity(fields.get("level"))
    _set_initiator(event, audit, fields)
    event["tenant_id"] = text(fields.get("tenantId"))
    event["correlation_id"] = text(first(audit, "correlationId") or fields.get("correlationId"))
    event["targets"] = _targets(audit.get("targetResources"))
    set_resource(event, fields.get("resourceId"))
    event["details"] = compact({
        "vendor_result": vendor_result(written_result, result),
        "audit_category": text(audit.get("category")),
        "logged_by_service": text(audit.get("loggedByService")),
        "operation_type": text(audit.get("operationType")),
    })
    return finish(event)


# Graph's operationResult enum as numbers, which older exports write.
_AUDIT_RESULT_CODES = {"0": "success", "1": "failure", "2": "timeout"}


def _set_initiator(event: Record, audit: Record, fields: Record) -> None:
    """Who: `initiatedBy.user`, else `initiatedBy.app`, else (an empty `initiatedBy`) the record's `identity`."""
    user = as_dict(nested(audit, "initiatedBy", "user"))
    app = as_dict(nested(audit, "initiatedBy", "app"))
    if first(user, "userPrincipalName", "displayName", "id"):
        event["actor"] = text(first(user, "userPrincipalName", "displayName"))
        event["actor_id"] = text(user.get("id"))
        event["actor_type"] = "User"
        event["source_ip"] = valid_ip(user.get("ipAddress"))
    elif first(app, "displayName", "servicePrincipalName", "servicePrincipalId", "appId"):
        event["actor"] = text(first(app, "displayName", "servicePrincipalName"))
        event["actor_id"] = text(app.get("servicePrincipalId"))
        event["actor_app_id"] = text(app.get("appId"))
        event["actor_type"] = "ServicePrincipal"
    else:
        event["actor"] = text(fields.get("identity")) if type(fields.get("identity")) is str else None
    event["source_ip"] = event["source_ip"] or valid_ip(fields.get("callerIpAddress"))


def _targets(resources: Any) -> list[dict[str, str | None]] | None:
    if not isinstance(resources, list):
        return None
    targets = [{"type": text(item.get("type")),
                "name": text(first(item, "userPrincipalName", "displayName")),
                "id": text(item.get("id"))}
               for item in resources if isinstance(item, dict)]
    return targets or None
