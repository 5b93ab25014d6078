"""Plain verdicts from ARM's JSON: NSG rules, NSGs, Key Vaults, storage accounts, role assignments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shared.enrich.resource_ids import resource_target
from shared.enrich.resources import resource_context, security_rule
from tests.conftest import sample
from tests.enrich.fake_arm import arm_body, arm_path

NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def rule(**properties: Any) -> dict[str, Any]:
    base = {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "443", "sourceAddressPrefix": "*",
            "destinationAddressPrefix": "*", "access": "Allow", "priority": 100, "direction": "Inbound"}
    return {"name": "r", "properties": base | properties}


def test_the_rule_from_the_activity_log_request_body_allows_9753_from_anyone() -> None:
    """The Start stage of samples/activity/nsg-rule-write.json carries the rule as the operator sent it."""
    record = orjson.loads(sample("activity/nsg-rule-write.json"))["records"][0]
    view = security_rule(orjson.loads(record["properties"]["requestbody"]))
    assert view.verdict == "allows inbound TCP 9753 from any source"
    assert view.risk == "medium"
    assert (view.priority, view.access, view.direction) == (100, "Allow", "Inbound")


@pytest.mark.parametrize(("properties", "verdict", "risk"), [
    ({"destinationPortRange": "3389"}, "allows inbound TCP 3389 from any source", "high"),
    ({"destinationPortRange": "3000-3400"}, "allows inbound TCP ports 3000-3400 from any source", "high"),
    ({"destinationPortRange": None, "destinationPortRanges": ["80", "443"]},
     "allows inbound TCP ports 80, 443 from any source", "medium"),
    ({"protocol": "*", "destinationPortRange": "*", "sourceAddressPrefix": "Internet"},
     "allows inbound any protocol on all ports from any source", "high"),
    ({"sourceAddressPrefix": "0.0.0.0/0", "destinationPortRange": "22"}, "allows inbound TCP 22 from any source",
     "high"),
    ({"sourceAddressPrefix": "203.0.113.0/24", "destinationPortRange": "22"},
     "allows inbound TCP 22 from 203.0.113.0/24", "low"),
    ({"sourceAddressPrefix": None, "sourceAddressPrefixes": ["203.0.113.24", "198.51.100.77"],
      "destinationAddressPrefix": "10.10.2.4"},
     "allows inbound TCP 443 from 203.0.113.24, 198.51.100.77 to 10.10.2.4", "low"),
    ({"sourceAddressPrefix": None, "sourceApplicationSecurityGroups": [{"id": "/subscriptions/x/asg-admins"}]},
     "allows inbound TCP 443 from application security group asg-admins", "low"),
    ({"access": "Deny", "destinationPortRange": "*", "protocol": "*"},
     "denies inbound any protocol on all ports from any source", "none"),
    ({"direction": "Outbound", "destinationAddressPrefix": "Internet", "destinationPortRange": "25",
      "access": "Deny"}, "denies outbound TCP 25 to any destination", "none"),
    ({"direction": "Outbound", "destinationAddressPrefix": "Storage", "sourceAddressPrefix": "VirtualNetwork"},
     "allows outbound TCP 443 from VirtualNetwork to Storage", "low"),
    ({"protocol": "Icmp", "destinationPortRange": "*"}, "allows inbound ICMP from any source", "low"),
    ({"protocol": "Udp", "destinationPortRange": "53"}, "allows inbound UDP 53 from any source", "medium"),
])
def test_rule_verdicts(properties: dict[str, Any], verdict: str, risk: str) -> None:
    view = security_rule(rule(**properties))
    assert (view.verdict, view.risk) == (verdict, risk)


def context(name: str, role_name: str | None = None) -> Any:
    return resource_context(resource_target(arm_path(name)), arm_body(name), fetched_at=NOW, role_name=role_name)


def test_nsg_lists_its_custom_rules_in_priority_order_and_names_the_exposed_ones() -> None:
    nsg = context("nsg-web")
    assert [rule.name for rule in nsg.rules or []] == ["allow-9753", "allow-https", "allow-rdp-office",
                                                       "deny-smtp-out"]
    assert nsg.verdict == ("2 of 4 custom rule(s) allow inbound traffic from any source: allow-9753: allows "
                           "inbound TCP 9753 from any source; allow-https: allows inbound TCP 443 from any source "
                           "to VirtualNetwork")
    assert nsg.risk == "medium"
    assert (nsg.kind, nsg.location, nsg.fetched_at) == ("network_security_group", "eastus", NOW)


def test_key_vault_open_to_all_networks_without_purge_protection() -> None:
    vault = context("kv-prod-secrets")
    assert vault.verdict == ("reachable from any network; purge protection off: a deleted vault can be purged at "
                             "once; 1 access policies grant data access (not Azure RBAC)")
    assert vault.risk == "medium"
    assert vault.key_vault is not None
    assert vault.key_vault.access_policies == [{"object_id": "0a9b0000-0000-4000-8000-0000000001d1",
                                                "permissions": {"keys": [], "secrets": ["get", "list"],
                                                                "certificates": []}}]


def test_locked_down_key_vault() -> None:
    body = arm_body("kv-prod-secrets")
    body["properties"] |= {"publicNetworkAccess": "Disabled", "enablePurgeProtection": True,
                           "enableRbacAuthorization": True}
    vault = resource_context(resource_target(arm_path("kv-prod-secrets")), body, fetched_at=NOW)
    assert (vault.verdict, vault.risk) == ("private network access only; purge protection on", "none")


def test_storage_account_with_anonymous_blob_access_is_high_risk() -> None:
    account = context("stprodexports")
    assert account.verdict == ("anonymous (public) blob access allowed; reachable from any network; shared key "
                               "(account key and SAS) access allowed")
    assert account.risk == "high"
    assert account.storage_account is not None
    assert (account.storage_account.sku, account.storage_account.minimum_tls_version) == ("Standard_GRS", "TLS1_2")


def test_role_assignment_names_role_principal_and_scope() -> None:
    assignment = context("role-assignment-bob-owner", role_name="Owner")
    assert assignment.verdict == ("grants Owner to User b0b00000-0000-4000-8000-0000000000b2 at subscription "
                                  "a1b2c3d4-1111-4111-8111-000000000001")
    assert assignment.risk == "high"
    assert assignment.role_assignment is not None and assignment.role_assignment.privileged


def test_role_assignment_without_a_readable_role_definition_still_knows_owner_by_id() -> None:
    assignment = context("role-assignment-bob-owner")
    assert assignment.verdict.startswith("grants role 8e3af657-a8ff-443c-a75c-2fe8c4bcb635 to User")
    assert assignment.risk == "high"


def test_resources_with_missing_properties_still_get_an_answer() -> None:
    bare = resource_context(resource_target(arm_path("nsg-web")), {"name": "nsg-web"}, fetched_at=NOW)
    assert bare.rules == [] and bare.risk == "none"
