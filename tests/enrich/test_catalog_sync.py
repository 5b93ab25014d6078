"""`python -m shared catalog sync`: ARM's provider operations added to the catalog, its own words kept."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shared.cli.main import main
from shared.normalize.catalog import OPERATIONS_FILE
from shared.normalize.catalog_sync import ArmOperation, encode, merge, provider_operations
from tests.enrich.fake_arm import FakeArm, arm_body, arm_path, forbidden

TDE_WRITE = "MICROSOFT.SQL/SERVERS/DATABASES/TRANSPARENTDATAENCRYPTION/WRITE"
TDE_READ = "MICROSOFT.SQL/SERVERS/DATABASES/TRANSPARENTDATAENCRYPTION/READ"


def test_the_bundled_catalog_is_written_back_byte_for_byte() -> None:
    original = OPERATIONS_FILE.read_bytes()
    assert encode(orjson.loads(original)) == original


def test_operations_of_providers_and_their_resource_types() -> None:
    names = [operation.name for operation in provider_operations([arm_body("provider-operations")])]
    assert names == ["Microsoft.Network/register/action", "Microsoft.Network/networkSecurityGroups/securityRules/read",
                     "Microsoft.Network/networkSecurityGroups/securityRules/write",
                     "Microsoft.Sql/servers/databases/transparentDataEncryption/write",
                     "Microsoft.Sql/servers/databases/transparentDataEncryption/read"]


def test_merge_keeps_existing_wording_and_appends_the_rest_sorted() -> None:
    catalog = {"_comment": "ours", "operations": {"B/WRITE": {"display_name": "Ours", "description": "Our words"}}}
    merged, added = merge(catalog, [ArmOperation("c/read", "Read C", None), ArmOperation("b/write", "Theirs", "x"),
                                    ArmOperation("a/delete", "Delete A", "Deletes A"),
                                    ArmOperation("A/Delete", "Duplicate", "again")])
    assert added == 2
    assert list(merged) == ["_comment", "operations"]
    assert merged["operations"] == {"B/WRITE": {"display_name": "Ours", "description": "Our words"},
                                    "A/DELETE": {"display_name": "Delete A", "description": "Deletes A"},
                                    "C/READ": {"display_name": "Read C"}}


@pytest.mark.usefixtures("enrich_env")
def test_sync_from_arm_into_the_file(tmp_path: Path, fake_arm: FakeArm) -> None:
    catalog = tmp_path / "operations.json"
    catalog.write_bytes(OPERATIONS_FILE.read_bytes())
    before = orjson.loads(catalog.read_bytes())["operations"]
    assert main(["catalog", "sync", "--file", str(catalog)]) == 0
    after = orjson.loads(catalog.read_bytes())["operations"]
    assert after[TDE_WRITE] == before[TDE_WRITE]  # the catalog's wording wins
    assert after[TDE_READ] == {"display_name": "Get Transparent Data Encryption", "description":
                               "Retrieve details of the database Transparent Data Encryption on a given database"}
    assert list(after)[:len(before)] == list(before)
    assert len(after) == len(before) + 3  # register/action, securityRules/read, TDE read
    assert catalog.read_bytes() == encode(orjson.loads(catalog.read_bytes()))
    [request] = fake_arm.calls(arm_path("provider-operations"))
    assert request.query == {"api-version": "2022-04-01", "$expand": "resourceTypes"}


@pytest.mark.usefixtures("enrich_env")
def test_a_failed_sync_leaves_the_catalog_as_it_was(tmp_path: Path, fake_arm: FakeArm,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    catalog = tmp_path / "operations.json"
    catalog.write_bytes(OPERATIONS_FILE.read_bytes())
    fake_arm.script(arm_path("provider-operations"), forbidden("Microsoft.Authorization/providerOperations/read"))
    assert main(["catalog", "sync", "--file", str(catalog)]) == 2  # a CLI error: one line, exit status 2
    assert catalog.read_bytes() == OPERATIONS_FILE.read_bytes()
    assert "Reader role" in capsys.readouterr().err
