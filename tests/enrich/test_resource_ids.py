"""The id grammar: allow-listed types are rebuilt into canonical ARM paths; anything else is refused."""

from __future__ import annotations

import pytest

from shared.enrich.resource_ids import (
    ALLOWED_TYPE_NAMES,
    alert_target,
    resource_target,
    role_definition_path,
)
from shared.http_errors import InputError
from tests.enrich.fake_arm import SUBSCRIPTION as SUB
from tests.enrich.fake_arm import arm_path

RULE = arm_path("rule-allow-9753")
NSG = arm_path("nsg-web")
VAULT = arm_path("kv-prod-secrets")
STORAGE = arm_path("stprodexports")
ASSIGNMENT = arm_path("role-assignment-bob-owner")
ALERT = arm_path("alert-powershell")


@pytest.mark.parametrize(("resource_id", "kind"), [
    (RULE, "security_rule"), (NSG, "network_security_group"), (VAULT, "key_vault"), (STORAGE, "storage_account"),
    (ASSIGNMENT, "role_assignment"), (f"{NSG}/providers/Microsoft.Authorization/roleAssignments/"
                                      "0a55a000-0119-4000-8000-000000000002", "role_assignment"),
    (f"/subscriptions/{SUB}/resourceGroups/rg-prod-web/providers/Microsoft.Authorization/roleAssignments/"
     "0a55a000-0119-4000-8000-000000000003", "role_assignment"),
])
def test_allow_listed_ids_keep_their_path(resource_id: str, kind: str) -> None:
    target = resource_target(resource_id)
    assert target.kind == kind
    assert target.path == resource_id


def test_ids_from_logs_in_upper_case_are_rebuilt_with_canonical_casing() -> None:
    target = resource_target("/SUBSCRIPTIONS/A1B2C3D4-1111-4111-8111-000000000001/RESOURCEGROUPS/RG-PROD-DATA"
                             "/PROVIDERS/MICROSOFT.STORAGE/STORAGEACCOUNTS/STPRODEXPORTS")
    assert target.path == (f"/subscriptions/{SUB}/resourceGroups/RG-PROD-DATA/providers/Microsoft.Storage/"
                           "storageAccounts/STPRODEXPORTS")


@pytest.mark.parametrize("hostile", [
    f"{NSG}/../../../providers/Microsoft.Compute/virtualMachines/vm-web-01",
    f"{NSG}/securityRules/..",
    f"{NSG}/securityRules/%2e%2e",
    f"{NSG}%2fsecurityRules%2fallow-9753",
    f"{NSG}%252F..",
    f"{NSG}?api-version=2099-01-01",
    f"{NSG}#fragment",
    f"{NSG}/",
    f"{NSG}//securityRules/x",
    f"{NSG}\\securityRules\\x",
    f"{NSG} ",
    f"{NSG}\n",
    f"{RULE}/extra",
    f"{RULE}/extra/segments",
    f"{VAULT}/secrets/db-password",
    f"{STORAGE}/listKeys",
    f"https://evil.example{NSG}",
    f"//evil.example{NSG}",
    NSG.replace(SUB, "not-a-guid"),
    "",
    "/" + "a" * 2000,
])
def test_hostile_ids_are_refused(hostile: str) -> None:
    with pytest.raises(InputError) as refused:
        resource_target(hostile)
    assert refused.value.status == 400


@pytest.mark.parametrize("other", [
    f"/subscriptions/{SUB}/resourceGroups/rg-prod-web/providers/Microsoft.Compute/virtualMachines/vm-web-01",
    f"/subscriptions/{SUB}/resourceGroups/rg-prod-web",
    f"/subscriptions/{SUB}",
    f"/subscriptions/{SUB}/resourceGroups/rg-prod-data/providers/Microsoft.Sql/servers/sql-prod-data",
])
def test_other_types_get_the_allow_list(other: str) -> None:
    with pytest.raises(InputError) as refused:
        resource_target(other)
    assert refused.value.allowed_types == ALLOWED_TYPE_NAMES
    assert "Microsoft.Network/networkSecurityGroups" in refused.value.message


def test_alert_ids_at_subscription_and_resource_group_level() -> None:
    assert alert_target(ALERT).path == ALERT
    subscription_level = f"/subscriptions/{SUB}/providers/Microsoft.Security/locations/westeurope/alerts/abc_1"
    assert alert_target(subscription_level).name == "abc_1"
    for refused in (f"{ALERT}/dismiss", ALERT.replace("alerts", "assessments"), f"{ALERT}/../x"):
        with pytest.raises(InputError):
            alert_target(refused)


def test_role_definition_ids_inside_assignments() -> None:
    owner = arm_path("role-definition-owner")
    assert role_definition_path(owner) == owner
    tenant_level = "/providers/Microsoft.Authorization/roleDefinitions/8E3AF657-A8FF-443C-A75C-2FE8C4BCB635"
    assert role_definition_path(tenant_level) == ("/providers/Microsoft.Authorization/roleDefinitions/"
                                                  "8e3af657-a8ff-443c-a75c-2fe8c4bcb635")
    assert role_definition_path(f"{owner}/../x") is None
