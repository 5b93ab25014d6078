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
