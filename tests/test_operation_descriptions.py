"""Every operation described: reviewed wording first, then Microsoft's stored catalog, then words from the id."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.clients.eventhubs import Position
from shared.normalize.batch import normalize_bodies
from shared.normalize.catalog import (
    VOCABULARY_FILE,
    OperationInfo,
    derived_description,
    load_operations,
    operation_description,
    split_words,
    use_stored_operations,
    vocabulary,
)

# The operations the issue found undescribed on real records, and the others an analyst asks about first.
SECURITY_RELEVANT = [
    "MICROSOFT.AUTHORIZATION/ELEVATEACCESS/ACTION", "MICROSOFT.AUTHORIZATION/LOCKS/DELETE",
    "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTACCOUNTSAS/ACTION", "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION",
    "MICROSOFT.KEYVAULT/VAULTS/SECRETS/GETSECRET/ACTION",
    "MICROSOFT.STORAGE/STORAGEACCOUNTS/BLOBSERVICES/CONTAINERS/IMMUTABILITYPOLICIES/DELETE",
    "MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/LISTCLUSTERADMINCREDENTIAL/ACTION",
    "MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/DELETE", "MICROSOFT.AADIAM/DIAGNOSTICSETTINGS/DELETE",
    "MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/SECURITYRULES/WRITE", "MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE",
    "MICROSOFT.AUTHORIZATION/POLICYASSIGNMENTS/DELETE", "MICROSOFT.AUTHORIZATION/POLICYEXEMPTIONS/WRITE",
    "MICROSOFT.SECURITY/PRICINGS/WRITE", "MICROSOFT.SECURITY/SECURITYCONTACTS/WRITE",
]
ENTRA_ACTIVITIES = [
    "Add member to role", "Add eligible member to role", "Add member to role completed (PIM activation)",
    "Add member to group", "Add owner to group", "Reset user password", "Invite external user",
    "Update application – Certificates and secrets management", "Add service principal credentials",
    "Consent to application", "Add app role assignment to service principal", "Update conditional access policy",
    "Set federation settings on domain", "Verify domain", "User registered security info",
]


@pytest.fixture(autouse=True)
def no_stored_catalog() -> Iterator[None]:
    use_stored_operations({})
    yield
    use_stored_operations({})


@pytest.mark.parametrize("operation", SECURITY_RELEVANT + [name.upper() for name in ENTRA_ACTIVITIES])
def test_security_relevant_operations_have_reviewed_wording(operation: str) -> None:
    info = load_operations()[operation]
    assert info.display_name and info.description
    assert operation_description(operation) == info.description


@pytest.mark.parametrize(("operation", "expected"), [
    ("MICROSOFT.AUTHORIZATION/LOCKS/READ", "Read management lock (Microsoft.Authorization/locks)"),
    ("MICROSOFT.KEYVAULT/VAULTS/SECRETS/BACKUP/ACTION",
     "Backup on key vault secret (Microsoft.KeyVault/vaults/secrets)"),
    ("Microsoft.Network/publicIPAddresses/read", "Read public IP address (Microsoft.Network/publicIPAddresses)"),
    ("MICROSOFT.SQL/SERVERS/DATABASES/AUDITINGSETTINGS/DELETE",
     "Delete auditing setting (Microsoft.Sql/servers/databases/auditingSettings)"),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/REIMAGE/ACTION",
     "Reimage on virtual machine (Microsoft.Compute/virtualMachineScaleSets/virtualMachines)"),
    ("MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AGENTPOOLS/UPGRADENODEIMAGEVERSION/ACTION",
     "Upgrade node image version on agent pool (Microsoft.ContainerService/managedClusters/agentPools)"),
    ("MICROSOFT.SUPPORT/REGISTER/ACTION", "Register (Microsoft.Support)"),
    ("CONTOSO.WIDGETS/GIZMOS/DELETE", "Delete gizmo (Contoso.Widgets/gizmos)"),
    ("DELETE NAMED LOCATION", "Delete named location (Entra ID activity)"),
    ("UPDATE PIM ALERT SETTING", "Update PIM alert setting (Entra ID activity)"),
    ("SECRETPURGE", "Secret purge (as logged)"),
    ("K8S.NODE_PRIVILEGEDCONTAINER", "K8S node privileged container (as logged)"),
    ("ARM_AnomalousServiceOperation.CredentialAccess", "ARM anomalous service operation credential access (as logged)"),
])
def test_unknown_ids_get_a_description_naming_verb_and_resource_type(operation: str, expected: str) -> None:
    assert operation_description(operation) == expected


def test_words_are_split_where_the_vocabulary_and_plurals_say() -> None:
    words = vocabulary().words
    assert split_words("LISTCLUSTERADMINCREDENTIAL", words) == ["list", "cluster", "admin", "credential"]
    assert split_words("IMMUTABILITYPOLICIES", words) == ["immutability", "policies"]
    assert split_words("VMS", words) == ["VMs"]
    assert split_words("QZXFROBNICATORS", words) == ["qzxfrobnicators"]  # letters no word covers stay together


def test_the_vocabulary_spells_each_word_one_way() -> None:
    words = orjson.loads(VOCABULARY_FILE.read_bytes())["words"]
    assert len({word.upper() for word in words}) == len(words)


def test_the_stored_catalog_describes_what_the_shipped_one_does_not_and_never_overrides_it() -> None:
    reviewed = "MICROSOFT.AUTHORIZATION/LOCKS/DELETE"
    use_stored_operations({reviewed: OperationInfo(description="ARM's words"),
                           "MICROSOFT.WIDGETS/GIZMOS/DELETE": OperationInfo(display_name="Delete Gizmo")})
    assert operation_description(reviewed) == load_operations()[reviewed].description
    assert operation_description("Microsoft.Widgets/gizmos/delete") == "Delete Gizmo"
    use_stored_operations({})
    assert operation_description("Microsoft.Widgets/gizmos/delete") == "Delete gizmo (Microsoft.Widgets/gizmos)"


def test_the_stored_catalog_adds_its_words_to_the_vocabulary() -> None:
    assert split_words("GADGETRY", vocabulary().words) == ["gadgetry"]
    use_stored_operations({"MICROSOFT.X/Y/READ": OperationInfo(display_name="Read Gadget Widgetry")})
    assert split_words("GADGETWIDGETRY", vocabulary().words) == ["gadget", "widgetry"]


@given(st.text(max_size=80))
def test_any_text_gets_a_description_and_nothing_raises(operation: str) -> None:
    described = operation_description(operation)
    assert (described is None) == (not operation or operation.isspace())
    assert derived_description(operation or "x")


def test_normalize_describes_an_operation_no_catalog_knows() -> None:
    record = {"time": "2026-11-20T08:00:00Z", "resourceId": "/SUBSCRIPTIONS/A1B2C3D4-1111-4111-8111-000000000001",
              "operationName": "MICROSOFT.AUTHORIZATION/LOCKS/READ", "category": "Administrative",
              "resultType": "Success"}
    result = normalize_bodies([(orjson.dumps({"records": [record]}), Position())], include_raw=False)
    [event] = [orjson.loads(output.body) for output in result.events]
    assert event["operation_description"] == "Read management lock (Microsoft.Authorization/locks)"


def test_a_huge_operation_name_is_described_without_quadratic_cost() -> None:
    from shared.normalize.catalog import split_words, vocabulary
    token = "LIST" * 50_000  # 200,000 letters: the word cover would need tens of GB
    assert split_words(token, vocabulary().words) == [token.lower()]


@pytest.mark.parametrize("operation", ["MICROSOFT.X/" + "/".join(["LISTKEYS" * 11] * 10_000) + "/WRITE",
                                       "_".join(["LISTKEYS" * 11] * 10_000)])
def test_an_operation_id_of_many_tokens_is_not_covered_word_by_word(
        operation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One token's cover is bounded; 10,000 of them in one record would still take seconds per event."""
    from shared.normalize import catalog

    def never(*args: object) -> list[str]:
        raise AssertionError("an id this long is not split into words")

    monkeypatch.setattr(catalog, "split_words", never)
    assert catalog.derived_description(operation) == catalog.TOO_LONG_TO_DESCRIBE
