"""Log Analytics rows, as data export rules stream a workspace's tables to Event Hubs.

A row is a record of the same event under its table's column names (`TimeGenerated`, `Type`,
`OperationNameValue`, `Properties_d`, ...). Each known table is renamed to the Event Hub export shape
of the same log and mapped by that log's mapper; other tables map as resource logs, with their table
as category. Dynamic columns may arrive as JSON text: they are parsed. A row's `TenantId` is the
workspace's id, not the Entra tenant: the tenant comes from `AADTenantId` or the token claims.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.normalize.mappers.activity import CATEGORIES, map_activity
from shared.normalize.mappers.defender import map_defender
from shared.normalize.mappers.identity import map_audit, map_signin
from shared.normalize.mappers.resource import map_resource_log
from shared.values import Record, as_dict, first, lower_keys, parse_json_text, text

SHAPE = "log_analytics"


def is_log_analytics(fields: Record) -> bool:
    """Every Log Analytics row has `TimeGenerated` and its table in `Type`."""
    return "timeGenerated" in fields and type(fields.get("type")) is str


def map_log_analytics(record: Record, fields: Record) -> Record:
    table = str(fields["type"]).strip()
    mapper = _TABLES.get(table.lower())
    if mapper is None:
        # Any other table: the diagnostic columns it shares with resource logs, its table as category.
        event = map_resource_log(record, {**fields, "category": text(fields.get("category")) or table,
                                          "tenantId": None})
    else:
        event = mapper(record, lower_keys(record))
    event["details"] = {**(event["details"] or {}), "shape": SHAPE, "table": table}
    return event


def _json(value: object) -> Record:
    """A dynamic column: an object, or JSON text holding one."""
    return as_dict(parse_json_text(value))


def _azure_activity(record: Record, row: Record) -> Record:
    category = text(first(row, "categoryvalue", "category")) or "Administrative"
    properties = {**_json(first(row, "properties_d", "properties")), "eventDataId": row.get("eventdataid")}
    export = {
        "time": row.get("timegenerated"),
        # `_ResourceId` is lower-cased by the workspace: the id as written, when there is one, first.
        "resourceId": first(row, "resourceid") or properties.get("entity") or row.get("_resourceid"),
        "operationName": first(row, "operationnamevalue", "operationname"),
        "resultType": first(row, "activitystatusvalue", "activitystatus"),
        "resultSignature": first(row, "activitysubstatusvalue", "activitysubstatus"),
        "caller": row.get("caller"),
        "callerIpAddress": row.get("calleripaddress"),
        "correlationId": row.get("correlationid"),
        "level": row.get("level"),
        "identity": {"claims": _json(first(row, "claims_d", "claims")),
                     "authorization": _json(first(row, "authorization_d", "authorization"))},
        "properties": properties,
    }
    return map_activity(CATEGORIES.get(category.lower(), category), record, export)


# Sign-in and audit columns are Graph's property names in PascalCase; these few differ more.
_GRAPH_NAMES = {
    "IPAddress": "ipAddress", "LocationDetails": "location", "Location": "countryCode",
    "ConditionalAccessPolicies": "appliedConditionalAccessPolicies", "RiskEventTypes_V2": "riskEventTypes_v2",
}


def graph_properties(record: Record) -> Record:
    """A sign-in or audit row's columns as the Graph properties the Event Hub export nests in `properties`."""
    return {_GRAPH_NAMES.get(column) or column[:1].lower() + column[1:]: parse_json_text(value)
            for column, value in record.items()}


def _entra_export(record: Record, row: Record, category: str) -> Record:
    return {
        "time": row.get("timegenerated"),
        "category": category,
        "properties": graph_properties(record),
        "operationName": row.get("operationname"),
        "resultType": row.get("resulttype"),
        "resultDescription": row.get("resultdescription"),
        "resultSignature": row.get("resultsignature"),
        "identity": row.get("identity"),
        "level": row.get("level"),
        "tenantId": first(row, "aadtenantid", "tenantid"),
        "correlationId": row.get("correlationid"),
        "resourceId": row.get("resourceid"),
    }


def _signin(category_key: str) -> Callable[[Record, Record], Record]:
    def mapper(record: Record, row: Record) -> Record:
        return map_signin(category_key, record, _entra_export(record, row, category_key))
    return mapper


def _audit(record: Record, row: Record) -> Record:
    return map_audit("auditlogs", record, _entra_export(record, row, "AuditLogs"))


# SecurityAlert columns → the names of Defender's continuous export, which `map_defender` reads.
_ALERT_COLUMNS = (
    ("SystemAlertId", "systemalertid"), ("AlertDisplayName", "alertname"), ("AlertType", "alerttype"),
    ("Description", "description"), ("Severity", "alertseverity"), ("Status", "status"),
    ("StartTimeUtc", "starttime"), ("EndTimeUtc", "endtime"), ("TimeGenerated", "timegenerated"),
    ("ProductName", "productname"), ("ProductComponentName", "productcomponentname"),
    ("CompromisedEntity", "compromisedentity"), ("AzureResourceId", "resourceid"), ("Intent", "tactics"),
    ("AlertUri", "alertlink"),
)


def _security_alert(record: Record, row: Record) -> Record:
    alert: Record = {name: row.get(column) for name, column in _ALERT_COLUMNS}
    alert["Entities"] = parse_json_text(row.get("entities"))
    alert["RemediationSteps"] = parse_json_text(row.get("remediationsteps"))
    return map_defender(alert, alert)


_TABLES: dict[str, Callable[[Record, Record], Record]] = {
    "azureactivity": _azure_activity,
    "signinlogs": _signin("signinlogs"),
    "aadnoninteractiveusersigninlogs": _signin("noninteractiveusersigninlogs"),
    "aadserviceprincipalsigninlogs": _signin("serviceprincipalsigninlogs"),
    "aadmanagedidentitysigninlogs": _signin("managedidentitysigninlogs"),
    "auditlogs": _audit,
    "securityalert": _security_alert,
}
TABLES = frozenset(_TABLES)
