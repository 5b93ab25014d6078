"""Sigma rules as SigmaHQ writes them: metadata, log source routing, the field map per service, keyword
selections and modifiers, statuses. Events are normalized from real-shaped Event Hub records (samples/)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.clients.eventhubs import Position
from shared.detect.alerts import Alert, alert_entity, alert_from_entity
from shared.detect.rules import load_rules
from shared.detect.rules.fields import field_map
from shared.detect.rules.sigma import compile_detection
from shared.normalize.batch import normalize_bodies
from tests.detect_fixtures import T0, rule_from

AUDIT = {"time": "2026-11-12T09:00:00Z", "operationName": "Disable Strong Authentication", "category": "AuditLogs",
         "resourceId": "/tenants/t/providers/Microsoft.aadiam", "tenantId": "t", "identity": "Carol",
         "properties": {"id": "Directory_x", "category": "UserManagement", "result": "success",
                        "resultReason": "", "activityDisplayName": "Disable Strong Authentication",
                        "loggedByService": "Core Directory",
                        "targetResources": [{"type": "User", "userPrincipalName": "erin@contoso.example",
                                             "modifiedProperties": [{"displayName": "StrongAuthenticationRequirement",
                                                                     "newValue": "[]"}]}]}}
SIGNIN = {"time": "2026-11-20T08:31:07Z", "operationName": "Sign-in activity", "category": "SignInLogs",
          "resultType": "50057", "resultDescription": "User account is disabled.", "tenantId": "t",
          "properties": {"id": "s1", "userPrincipalName": "bob@contoso.example", "status": {"errorCode": 50057},
                         "authenticationProtocol": "ropc", "deviceDetail": {"isCompliant": False},
                         "authenticationRequirement": "singleFactorAuthentication"}}
ACTIVITY = {"time": "2026-11-18T10:00:00Z", "operationName": "MICROSOFT.PORTAL/CONSOLES/WRITE", "category": "Write",
            "resultType": "Success", "resourceId": "/SUBSCRIPTIONS/A1B2C3D4-1111-4111-8111-000000000001/PROVIDERS/"
            "MICROSOFT.PORTAL/CONSOLES/DEFAULT", "properties": {"eventCategory": "Administrative",
                                                               "message": "Microsoft.Portal/consoles/write"}}
RISK = {"time": "2026-11-21T02:20:00Z", "operationName": "User Risk Detection", "category": "UserRiskEvents",
        "resourceId": "/tenants/t/providers/Microsoft.aadiam", "tenantId": "t",
        "properties": {"id": "r1", "riskEventType": "impossibleTravel", "userPrincipalName": "dave@contoso.example"}}


def normalized(record: dict[str, Any]) -> dict[str, Any]:
    result = normalize_bodies([(orjson.dumps({"records": [record]}), Position("0", 0))], include_raw=True)
    [output] = result.events
    event: dict[str, Any] = orjson.loads(output.body)
    return event


EVENTS = {name: normalized(record) for name, record in
          {"audit": AUDIT, "signin": SIGNIN, "activity": ACTIVITY, "risk": RISK}.items()}


def sigma(tmp_path: Path, service: str, detection: str, extra: str = "") -> Any:
    return rule_from(tmp_path, f"""
        title: a SigmaHQ-shaped rule
        id: 7ea78478-a4f9-42a6-9dcd-f861816122bf
        status: test
        description: as written upstream
        references: [https://example.org/a]
        author: Someone
        date: 2022/02/08
        modified: 2024-01-01
        tags: [attack.defense-evasion, attack.t1556]
        logsource: {{product: azure, service: {service}}}
        detection:
        {detection}
        falsepositives: [Authorized modification]
        level: medium
        fields: [CallerIpAddress]
        related: [{{id: 0a0b0c0d-0000-4000-8000-000000000000, type: derived}}]
        {extra}""")


def fires_on(rule: Any) -> set[str]:
    return {name for name, event in EVENTS.items() if rule.selects(event)}


@pytest.mark.parametrize(("service", "detection", "fires"), [
    # One name, three naming families, meaning what it means in that log.
    ("auditlogs", "properties.message: Disable Strong Authentication", {"audit"}),
    ("auditlogs", "OperationName: disable strong authentication", {"audit"}),
    ("auditlogs", "ActivityDisplayName: Disable Strong Authentication", {"audit"}),
    ("auditlogs", "Category: UserManagement", {"audit"}),
    ("auditlogs", "Status: success", {"audit"}),
    ("auditlogs", "TargetResources.modifiedProperties.displayName: StrongAuthenticationRequirement", {"audit"}),
    ("auditlogs", "initiatedBy|exists: false", {"audit"}),
    ("signinlogs", "ResultType: 50057", {"signin"}),
    ("signinlogs", "properties.message: ROPC", {"signin"}),
    ("signinlogs", "DeviceDetail.isCompliant: 'false'", {"signin"}),
    ("signinlogs", "AuthenticationRequirement: singleFactorAuthentication", {"signin"}),
    ("signinlogs", "Status: failure", {"signin"}),
    ("activitylogs", "OperationNameValue: microsoft.portal/consoles/write", {"activity"}),
    ("activitylogs", "CategoryValue: Administrative", {"activity"}),
    ("activitylogs", "properties.message: Microsoft.Portal/consoles/write", {"activity"}),
    ("activitylogs", "ResourceProviderValue: Microsoft.Portal", {"activity"}),
    ("riskdetection", "riskEventType: impossibleTravel", {"risk"}),
    ("pim", "properties.message: Disable Strong Authentication", {"audit"}),
])
def test_field_names_resolve_per_service_and_rules_see_only_their_log(
        tmp_path: Path, service: str, detection: str, fires: set[str]) -> None:
    rule = sigma(tmp_path, service, f"  selection:\n              {detection}\n          condition: selection")
    assert fires_on(rule) == fires


def test_sigma_metadata_is_accepted_and_level_is_the_severity(tmp_path: Path) -> None:
    rule = sigma(tmp_path, "auditlogs", "  selection:\n              Category: UserManagement\n"
                 "          condition: selection")
    assert rule.spec.level == "medium" and rule.spec.author == ["Someone"] and rule.service == "auditlogs"
    assert rule.kind == "match" and not rule.value_getters  # Sigma's `fields` only lists what to show


def test_keyword_selections_search_every_text_of_the_event(tmp_path: Path) -> None:
    rule = sigma(tmp_path, "activitylogs", "  keywords:\n              - 'consoles/wr'\n"
                 "              - nothing-like-this\n          condition: keywords")
    assert fires_on(rule) == {"activity"}


@pytest.mark.parametrize(("selection", "matches"), [
    ({"raw.properties.message|base64": "x"}, False),
    ({"encoded|base64": "Microsoft.Portal"}, True),
    ({"encoded|base64offset|contains": "Portal/consoles"}, True),
    ({"cmd|windash|contains": "-enc"}, True),
    ({"cmd|contains|windash": "/nop"}, True),
    ({"count|gte": 5}, True),
    ({"count|lt": 5}, False),
    ({"actor|cased": "Bob"}, True),
    ({"actor|cased": "bob"}, False),
    ({"actor|re|i": "^BOB$"}, True),
    ({"actor|fieldref": "alias"}, True),
    ({"missing|exists": False}, True),
    ({"actor|exists": True}, True),
    ({"empty": ""}, True),
    ({"missing": None}, True),
    ({"actor|contains|all": ["B", "o", "z"]}, False),
])
def test_sigma_modifiers(selection: dict[str, Any], matches: bool) -> None:
    event = {"actor": "Bob", "alias": "bob", "count": "7", "empty": "", "cmd": "powershell /enc -nop",
             "encoded": base64.b64encode(b"prefix Microsoft.Portal/consoles/write").decode()}
    event["encoded"] = event["encoded"] if "base64offset" in next(iter(selection)) else \
        base64.b64encode(b"Microsoft.Portal").decode()
    assert compile_detection({"sel": selection, "condition": "sel"})(event) is matches


def test_unsupported_log_sources_are_reported_and_the_rest_load(tmp_path: Path) -> None:
    good = "title: t\nid: a\nlevel: low\nlogsource: {product: azure, service: signinlogs}\n" \
           "detection: {s: {ResultType: 0}, condition: s}\n"
    (tmp_path / "a.yml").write_text(good)
    (tmp_path / "b.yml").write_text(good.replace("id: a", "id: b").replace("product: azure", "product: windows"))
    (tmp_path / "c.yml").write_text(good.replace("id: a", "id: c").replace("signinlogs", "nosuchlog"))
    pack = load_rules(tmp_path)
    assert [rule.id for rule in pack.rules] == ["a"]
    assert ["only azure" in error.message for error in pack.errors] == [True, False]
    assert "nosuchlog" in pack.errors[1].message and "field_map.yaml" in pack.errors[1].message


def test_statuses_choose_which_sigma_rules_run(tmp_path: Path) -> None:
    for status in ("stable", "test", "experimental"):
        (tmp_path / f"{status}.yml").write_text(
            f"title: t\nid: {status}\nstatus: {status}\nlevel: low\ndetection: {{s: {{actor: x}}, condition: s}}\n")
    (tmp_path / "ours.yml").write_text("title: t\nid: ours\nlevel: low\ndetection: {s: {actor: x}, condition: s}\n")
    assert sorted(rule.id for rule in load_rules(tmp_path).rules) == ["ours", "stable", "test"]
    assert sorted(rule.id for rule in load_rules(tmp_path, ["experimental"]).rules) == ["experimental", "ours"]
    assert [Path(skipped.path).stem for skipped in load_rules(tmp_path).skipped] == ["experimental"]


def test_every_service_of_the_field_map_routes_to_a_normalized_source() -> None:
    services = field_map().services
    assert {"activitylogs", "auditlogs", "signinlogs", "riskdetection", "pim"} <= set(services)
    assert field_map().service({"product": "Azure", "service": "AzureActivity"}) is services["activitylogs"]


def test_alert_metadata_round_trips_through_the_alerts_table_shape() -> None:
    alert = Alert(alert_id="a", rule_id="r", title="t", severity="high", time=T0,
                  group={}, count=1, first_seen=T0, last_seen=T0,
                  event_ids=["e"], summary="s", tags=["attack.t1078"], references=["https://x"],
                  falsepositives=["admins"], author="me")
    assert alert_from_entity(alert_entity(alert)) == alert
    older = {key: value for key, value in alert_entity(alert).items()
             if key not in ("tags", "references", "falsepositives", "author")}
    assert alert_from_entity(older).tags == []


@pytest.mark.parametrize("selection", [{"requestbody|contains": "x"}, {"requestbody|re": "x"},
                                       {"requestbody.a|contains": "x"}])
def test_json_text_nested_past_what_orjson_writes_matches_nothing_and_raises_nothing(
        selection: dict[str, Any]) -> None:
    """A request body is JSON text any ARM caller writes; read as JSON it may nest 1,024 deep, but orjson
    writes only 254 levels back when the rule compares the nested value as text."""
    deep = '{"a":' + "[" * 300 + "]" * 300 + "}"
    event = {"raw": {"properties": {"requestbody": deep}}, "requestbody": orjson.loads(deep)}
    assert compile_detection({"sel": selection, "condition": "sel"})(event) is False
