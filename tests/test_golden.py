"""Golden tests: every bundled sample → its reviewed normalized output in tests/golden/.

Changing an expectation is deliberate: run `UPDATE_GOLDEN=1 pytest tests/test_golden.py`, then review
the diff of tests/golden/ like code. The story tests below pin the fields that matter by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.clients.eventhubs import Position
from shared.normalize.batch import normalize_bodies
from shared.normalized_event import DeadLetter, NormalizedEvent
from tests.conftest import SAMPLES

GOLDEN = Path(__file__).parent / "golden"
SAMPLE_FILES = sorted(path.relative_to(SAMPLES).as_posix() for path in SAMPLES.rglob("*.json"))


def normalize_file(relative: str) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    result = normalize_bodies([((SAMPLES / relative).read_bytes(), Position("0", 0))], include_raw=False)
    return [orjson.loads(output.body) for output in result.events], result.dead_letters


@pytest.mark.parametrize("relative", SAMPLE_FILES)
def test_sample_matches_its_golden_output(relative: str) -> None:
    events, dead_letters = normalize_file(relative)
    actual = {"events": events, "dead_letters": [letter.reason for letter in dead_letters]}
    golden = GOLDEN / relative
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(orjson.dumps(actual, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert golden.exists(), f"no golden output for {relative}: run UPDATE_GOLDEN=1 and review it"
    assert actual == orjson.loads(golden.read_bytes())


@pytest.mark.parametrize("relative", [name for name in SAMPLE_FILES if not name.startswith("bad/")])
def test_every_good_sample_record_is_a_valid_contract_event(relative: str) -> None:
    events, dead_letters = normalize_file(relative)
    assert events and not dead_letters
    for event in events:
        NormalizedEvent.model_validate(event)
        assert event["time"].endswith("Z")


def by_result(relative: str) -> dict[str, dict[str, Any]]:
    return {event["result"]: event for event in normalize_file(relative)[0]}


def test_nsg_rule_written_in_three_stages_keeps_the_rule_on_start() -> None:
    stages = by_result("activity/nsg-rule-write.json")
    assert list(stages) == ["Start", "Accept", "Success"]
    assert {event["correlation_id"] for event in stages.values()} == {"c0a1e5ce-0101-4000-8000-000101000000"}
    start = stages["Start"]
    assert start["operation"] == "MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/SECURITYRULES/WRITE"
    assert start["resource_type"] == "Microsoft.Network/networkSecurityGroups/securityRules"
    assert (start["resource_name"], start["resource_group"]) == ("allow-9753", "rg-prod-web")
    assert start["subscription_id"] == "a1b2c3d4-1111-4111-8111-000000000001"
    assert (start["actor"], start["actor_type"], start["source_ip"]) == (
        "dave@contoso.example", "User", "2001:db8:c0:10::d4")
    rule = start["details"]["request_body"]["properties"]
    assert (rule["destinationPortRange"], rule["sourceAddressPrefix"], rule["access"]) == (
        "9753", "*", "Allow")
    assert "request_body" not in (stages["Success"]["details"] or {})
    assert start["operation_description"] is not None
    assert start["time"] == "2026-11-12T14:03:11.462031Z"
    assert start["event_id"] == "e7e7da7a-0101-4001-8000-000101000001"


def test_vm_started_by_a_user_from_an_upper_case_export() -> None:
    stages = by_result("activity/vm-start.json")
    success = stages["Success"]
    assert (success["category"], success["action"], success["common_event"]) == (
        "Administrative", "action", "Action Performed")
    assert (success["actor"], success["source_ip"]) == ("alice@contoso.example", "203.0.113.24")
    assert success["subscription_id"] == "a1b2c3d4-1111-4111-8111-000000000001"
    assert success["resource_name"] == "VM-WEB-01"


@pytest.mark.parametrize(("relative", "common_event"), [
    ("activity/keyvault-delete.json", "Object Deleted/Removed"),
    ("activity/diagnostic-settings-delete.json", "Diagnostics Disabled"),
    ("activity/sql-tde-write.json", "Encryption Modified"),
    ("activity/role-assignment-write.json", "Role Assigned"),
    ("activity/policy-assignment-delete.json", "Policy Modified"),
    ("activity/security.json", "Security Alert"),
    ("policy/policy-audit.json", "Policy Violation"),
    ("signin/signin-failure.json", "Authentication Failure"),
    ("signin/signin-mfa-success.json", "Authentication Success"),
    ("audit/user-removed-from-group.json", "Group Membership Removed"),
    ("audit/user-created.json", "Account Created"),
    ("audit/role-member-added.json", "Role Assigned"),
    ("audit/sp-credentials-added.json", "Credential Added"),
    ("defender/continuous-export-alert.json", "Security Alert"),
    ("activity/service-health.json", "Service Health"),
])
def test_seed_stories_are_classified(relative: str, common_event: str) -> None:
    events, _ = normalize_file(relative)
    assert {event["common_event"] for event in events} == {common_event}


def test_sign_in_failure_and_mfa_success() -> None:
    failure = normalize_file("signin/signin-failure.json")[0][0]
    assert (failure["actor"], failure["result"], failure["source_ip"]) == (
        "bob@contoso.example", "Failure", "198.51.100.77")
    assert failure["result_reason"].startswith("50126")
    assert failure["event_id"] == "519a1000-0301-4001-8000-000301000001"
    success = normalize_file("signin/signin-mfa-success.json")[0][0]
    assert success["auth_requirement"] == "multiFactorAuthentication"
    assert success["mfa_method"] == "Mobile app notification"  # Authenticator push
    assert success["conditional_access"] and all("name" in policy for policy in success["conditional_access"])


def test_risky_sign_in_carries_risk_and_country() -> None:
    event = normalize_file("signin/risky-signin.json")[0][0]
    assert (event["risk_level"], event["risk_state"], event["risk_event_types"]) == (
        "medium", "atRisk", ["unfamiliarFeatures"])
    assert event["details"]["country"] == "BR"


def test_user_created_names_the_admin_and_the_target() -> None:
    event = normalize_file("audit/user-created.json")[0][0]
    assert (event["actor"], event["source_ip"], event["result"]) == (
        "carol@contoso.example", "203.0.113.25", "Success")
    assert event["targets"][0]["name"] == "erin@contoso.example"


def test_defender_continuous_export_alert() -> None:
    event = normalize_file("defender/continuous-export-alert.json")[0][0]
    assert event["alert_id"] == "2516816543210987654_a1e47000-0501-4000-8000-000501000001"
    assert (event["alert_name"], event["severity"], event["result"]) == (
        "Successful brute force attack", "Critical", "Active")
    assert (event["resource_name"], event["source_ip"]) == ("vm-web-01", "198.51.100.61")
    assert event["time"] == "2026-11-13T01:47:12Z"
    entity_types = {str(entity.get("Type", entity.get("type"))).lower() for entity in event["alert_entities"]}
    assert "ip" in entity_types


def test_policy_audit_carries_the_policy_from_the_json_string() -> None:
    event = normalize_file("policy/policy-audit.json")[0][0]
    assert event["source"] == "policy"
    assert event["policy_definition"].endswith("34c877ad-507e-4c82-993e-3452a6e0ad3c")
    assert event["policy_assignment"].endswith("/policyAssignments/prod-storage-restrict-network")
    assert event["policy_effect"].lower() == "audit"
    assert event["resource_name"] == "stprodexports"


def test_bad_samples_keep_the_good_record_and_dead_letter_the_rest() -> None:
    events, dead_letters = normalize_file("bad/mixed.json")
    assert len(events) == 1
    assert [letter.record_index for letter in dead_letters] == [1, 2, 3]
    assert [letter.reason for letter in dead_letters] == [
        "record is not an object but a number", "record is not an object but a string",
        "record is not an object but null"]
    events, dead_letters = normalize_file("bad/truncated.json")
    assert not events and len(dead_letters) == 1 and dead_letters[0].record_index is None


TENANT = "72f988bf-0000-4000-8000-000000000001"
# Each shape and each field-level fix of issue 15, pinned on the sample written in that shape:
# (sample, record index, the fields that must hold). The golden files hold the rest.
SHAPE_STORIES = [
    ("log-analytics/azure-activity.json", 0, {
        "source": "activity", "category": "Administrative", "result": "Success", "actor": "alice@contoso.example",
        "actor_type": "User", "source_ip": "203.0.113.24", "tenant_id": TENANT,
        "resource_type": "Microsoft.Network/networkSecurityGroups/securityRules", "common_event": "Object Created"}),
    ("log-analytics/azure-activity.json", 1, {
        "result": "Failure", "common_event": "Operation Failed", "actor_id": "b0b00000-0000-4000-8000-0000000000b2"}),
    ("log-analytics/signin-tables.json", 0, {
        "source": "signin", "category": "SignInLogs", "actor": "bob@contoso.example", "result": "Success",
        "risk_level": "low", "mfa_method": "Mobile app notification", "tenant_id": TENANT}),
    ("log-analytics/signin-tables.json", 1, {"category": "NonInteractiveUserSignInLogs", "result": "Interrupted"}),
    ("log-analytics/signin-tables.json", 2, {
        "category": "ServicePrincipalSignInLogs", "actor": "deploy-pipeline", "actor_type": "ServicePrincipal",
        "result": "Failure", "source_ip": "2001:db8:4d2::17"}),
    ("log-analytics/signin-tables.json", 3, {"category": "ManagedIdentitySignInLogs", "actor_type": "ManagedIdentity"}),
    ("log-analytics/audit-logs.json", 0, {
        "source": "audit", "operation": "ADD MEMBER TO ROLE", "actor": "carol@contoso.example", "result": "Success",
        "common_event": "Role Assigned"}),
    ("log-analytics/security-alert.json", 0, {
        "source": "defender", "alert_name": "Access from a TOR exit node to a key vault", "severity": "Critical",
        "result": "Active", "source_ip": "198.51.100.250", "resource_name": "kv-prod-secrets"}),
    ("log-analytics/other-table.json", 0, {
        "source": "resource", "category": "AuditEvent", "operation": "SECRETGET", "tenant_id": None}),
    ("graph/signins.json", 0, {"source": "signin", "actor": "dave@contoso.example", "risk_level": "medium",
                               "source_ip": "198.51.100.143", "result": "Success"}),
    ("graph/signins.json", 1, {"result": "Failure", "common_event": "Authentication Failure"}),
    ("graph/directory-audits.json", 0, {"source": "audit", "operation": "UPDATE CONDITIONAL ACCESS POLICY",
                                        "actor": "carol@contoso.example", "result": "Success"}),
    ("graph/directory-audits.json", 1, {"actor": "Microsoft Teams Services", "actor_type": "ServicePrincipal",
                                        "result": "Failure", "common_event": "Operation Failed"}),
    ("graph/risk-detections.json", 0, {"category": "UserRiskEvents", "action": "alert", "risk_level": "medium",
                                       "actor": "dave@contoso.example", "alert_name": "unfamiliarFeatures"}),
    ("signin/user-risk-event.json", 0, {
        "source": "signin", "category": "UserRiskEvents", "result": None, "risk_event_types": ["unfamiliarFeatures"],
        "actor": "dave@contoso.example", "tenant_id": TENANT, "time": "2026-11-22T02:14:09Z"}),
    ("graph/security-alerts.json", 0, {"source": "defender", "result": "Active", "severity": "Critical",
                                       "source_ip": "198.51.100.250", "resource_name": "vm-dev-build-01"}),
    ("rest/activity-log-list.json", 0, {
        "category": "Administrative", "result": "Success", "source_ip": "203.0.113.24",
        "actor_id": "a11ce000-0000-4000-8000-0000000000a1", "operation": "MICROSOFT.SQL/SERVERS/FIREWALLRULES/WRITE"}),
    ("rest/activity-log-list.json", 1, {"result": "Failure", "common_event": "Operation Failed"}),
    ("rest/activity-log-list.json", 2, {"category": "Alert", "actor": "Microsoft.Insights/alertRules",
                                        "actor_type": "System", "result": "Active"}),
    ("rest/activity-log-list.json", 3, {
        "source": "defender", "alert_name": "Suspicious double extension file executed", "region": "eastus",
        "resource_group": "rg-prod-web", "severity": "Critical"}),
    ("event-grid/policy-state-cloudevents.json", 0, {
        "source": "policy", "result": "NonCompliant", "common_event": "Policy Violation",
        "policy_definition": "/providers/Microsoft.Authorization/policyDefinitions/"
                             "fe83a0eb-a853-422d-aac2-1bffd182c5d0"}),
    ("activity/pim-activation.json", 1, {
        "actor": "dave@contoso.example", "action": "create_or_update", "tenant_id": TENANT}),
    ("activity/vendor-spellings.json", 0, {"result": "Success", "actor_type": "User"}),
    ("activity/vendor-spellings.json", 1, {
        "result": "Failure", "actor_type": "User", "common_event": "Operation Failed"}),
    ("audit/legacy-categories.json", 0, {
        "source": "audit", "result": "Success", "actor": "Microsoft Azure AD Internal - Jit Provisioning"}),
    ("audit/legacy-categories.json", 1, {"source": "audit", "actor": "carol@contoso.example", "result": "Success"}),
    ("audit/legacy-categories.json", 2, {"source": "audit", "operation": "UPDATE CONDITIONAL ACCESS POLICY"}),
    ("activity/autoscale.json", 0, {"actor": "Microsoft.Insights/autoscaleSettings", "actor_type": "System"}),
    ("activity/security.json", 0, {"region": "eastus", "alert_description": (
        "Suspicious PowerShell Activity Detected. Analysis of host data detected a PowerShell script running on"
        " vm-web-01 that has features in common with known suspicious scripts.")}),
]


@pytest.mark.parametrize(("relative", "index", "expected"), SHAPE_STORIES,
                         ids=[f"{relative}[{index}]" for relative, index, _ in SHAPE_STORIES])
def test_every_shape_maps_to_the_contract_with_the_fields_it_carries(
        relative: str, index: int, expected: dict[str, Any]) -> None:
    event = normalize_file(relative)[0][index]
    assert {field: event[field] for field in expected} == expected


def test_vendor_spellings_become_the_one_result_vocabulary_and_are_kept_in_details() -> None:
    events = normalize_file("activity/vendor-spellings.json")[0]
    assert [(event["result"], event["details"]["vendor_result"]) for event in events] == [
        ("Success", "Succeeded."), ("Failure", "Failed")]
    assert events[1]["result_reason"].startswith("OperationNotAllowed: ")
    assert normalize_file("audit/legacy-categories.json")[0][0]["details"]["vendor_result"] == "0"
    rest = normalize_file("rest/activity-log-list.json")[0]
    assert [event["details"].get("vendor_result") for event in rest] == ["Succeeded", "Failed", "Activated", None]


def test_event_properties_stay_in_details() -> None:
    alert = normalize_file("rest/activity-log-list.json")[0][2]
    assert alert["details"]["event_properties"]["RuleName"] == "cpu-high-vm-web-02"


def test_new_shapes_say_which_shape_they_were_read_from() -> None:
    shapes = {relative.split("/")[0]: {(event["details"] or {}).get("shape") for event in normalize_file(relative)[0]}
              for relative in ("log-analytics/azure-activity.json", "graph/signins.json",
                               "rest/activity-log-list.json", "event-grid/policy-state-cloudevents.json")}
    assert shapes == {"log-analytics": {"log_analytics"}, "graph": {"graph"}, "rest": {"activity_log_rest"},
                      "event-grid": {"cloudevents"}}


def test_unsupported_shapes_are_dead_lettered_naming_the_shape_and_where_their_time_is() -> None:
    events, dead_letters = normalize_file("bad/unsupported-shapes.json")
    assert not events
    reasons = [letter.reason for letter in dead_letters]
    assert all(reason.startswith("unsupported shape: ") and "record has no time" not in reason for reason in reasons)
    assert "Microsoft Graph object (#microsoft.graph.user)" in reasons[0] and "'createdDateTime'" in reasons[0]
    assert "CloudEvents event of type 'Microsoft.Storage.BlobCreated'" in reasons[1]
    assert "'CreationTime'" in reasons[2]
