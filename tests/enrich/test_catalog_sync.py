"""Microsoft's operation catalog from ARM: into the app's storage by the daily timer, from there into normalize
and enrich; and into the shipped file by `python -m shared catalog sync`, its own words kept."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient

from shared.cli import azurite
from shared.cli.main import main
from shared.clients import wiring
from shared.clients.arm import ArmClient, RetryPolicy
from shared.clients.catalog_store import CATALOG_BLOB, CATALOG_CONTAINER, BlobCatalogStore
from shared.clients.eventhubs import trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.normalize.catalog import OPERATIONS_FILE, OperationInfo, operation_description, use_stored_operations
from shared.normalize.catalog_sync import (
    ArmOperation,
    StoredCatalogReader,
    encode,
    merge,
    provider_operations,
    store_catalog,
)
from tests.conftest import indexed_functions
from tests.enrich.conftest import call, json_of
from tests.enrich.fake_arm import Answer, FakeArm, arm_body, arm_path, failing, forbidden

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


TDE_READ_WORDS = "Retrieve details of the database Transparent Data Encryption on a given database"
NOW = datetime(2026, 11, 20, 3, 17, tzinfo=UTC)
GIZMOS = {"MICROSOFT.WIDGETS/GIZMOS/DELETE": OperationInfo(description="Our gizmo words")}


class MemoryStore:
    """A stand-in for the blob where the test is about the reader's decisions, not about storage."""

    def __init__(self, document: bytes | None = None, *, unreachable: bool = False) -> None:
        self.document, self.unreachable, self.reads = document, unreachable, 0

    def read(self) -> bytes | None:
        self.reads += 1
        if self.unreachable:  # what the Blob client raises once its retries are spent
            raise ServiceRequestError("connection refused")
        return self.document

    def write(self, document: bytes) -> None:
        self.document = document


@pytest.fixture
def blob_store(azurite_instance: azurite.Azurite) -> Iterator[BlobCatalogStore]:
    """The app's catalog blob in the session's Azurite, removed afterwards with the catalog it put to use."""
    service = BlobServiceClient.from_connection_string(azurite_instance.connection_string)
    yield BlobCatalogStore(service)
    with contextlib.suppress(ResourceNotFoundError):
        service.get_container_client(CATALOG_CONTAINER).delete_blob(CATALOG_BLOB)


@pytest.fixture(autouse=True)
def no_stored_catalog() -> Iterator[None]:
    use_stored_operations({})
    yield
    use_stored_operations({})


def no_wait_arm(fake_arm: FakeArm) -> ArmClient:
    return ArmClient(fake_arm.url, None, retry=RetryPolicy(attempts=2), sleep=lambda _: None)


@pytest.mark.usefixtures("enrich_env")
def test_the_daily_timer_stores_arms_catalog_and_normalize_and_enrich_use_it(
        fake_arm: FakeArm, blob_store: BlobCatalogStore) -> None:
    timer = indexed_functions()["catalog_refresh"]
    trigger = orjson.loads(timer.get_function_json())["bindings"][0]
    assert trigger["type"] == "timerTrigger" and trigger["schedule"] == "0 17 3 * * *"
    assert blob_store.read() is None
    timer.get_user_function()(TimerRequest())
    stored = orjson.loads(blob_store.read() or b"")
    assert stored["operations"][TDE_READ] == {"display_name": "Get Transparent Data Encryption",
                                             "description": TDE_READ_WORDS}
    assert len(stored["operations"]) == 5 and stored["refreshed_at"]
    [request] = fake_arm.calls(arm_path("provider-operations"))
    assert request.query == {"api-version": "2022-04-01", "$expand": "resourceTypes"}

    record = {"time": "2026-11-20T08:00:00Z", "operationName": TDE_READ.lower(), "category": "Administrative",
              "resourceId": "/SUBSCRIPTIONS/A1B2C3D4-1111-4111-8111-000000000001", "resultType": "Success"}
    indexed_functions()["normalize"].get_user_function()(
        trigger_batch([orjson.dumps({"records": [record]})], "0", 1, NOW))
    publisher = wiring.publisher()
    assert isinstance(publisher, InProcessPublisher)
    [event] = publisher.hubs["normalized"]
    assert orjson.loads(event.body)["operation_description"] == TDE_READ_WORDS
    assert json_of(call("enrich_operation", route={"name": TDE_READ}))["description"] == TDE_READ_WORDS
    # the shipped, reviewed wording still wins over ARM's
    assert operation_description(TDE_WRITE) == orjson.loads(OPERATIONS_FILE.read_bytes())["operations"][
        TDE_WRITE]["description"]


@pytest.mark.parametrize("answer", [forbidden("Microsoft.Authorization/providerOperations/read"), failing(503),
                                    Answer(200, {"value": []})], ids=["403", "503", "empty"])
def test_a_failed_refresh_keeps_the_last_stored_catalog_and_says_why(
        fake_arm: FakeArm, blob_store: BlobCatalogStore, answer: Answer, caplog: pytest.LogCaptureFixture) -> None:
    assert store_catalog(no_wait_arm(fake_arm), blob_store, NOW) == 5
    last_good = blob_store.read()
    fake_arm.script(arm_path("provider-operations"), answer, answer)
    with caplog.at_level(logging.ERROR, "stormwatch.normalize.catalog"):
        assert store_catalog(no_wait_arm(fake_arm), blob_store, NOW) == 0
    assert blob_store.read() == last_good
    assert "operation catalog not refreshed, the stored one stays" in caplog.text


@pytest.mark.parametrize("stored", [b"{not json", b"[]", b'{"operations": {"X/Y/READ": {"description": 5}}}',
                                    b'{"operations": ["X/Y/READ"]}'])
def test_a_corrupt_stored_catalog_is_ignored_with_a_log_line(stored: bytes, caplog: pytest.LogCaptureFixture) -> None:
    use_stored_operations(GIZMOS)
    with caplog.at_level(logging.ERROR, "stormwatch.normalize.catalog"):
        StoredCatalogReader(MemoryStore(stored)).refresh_if_due()
    assert "stored operation catalog ignored, it is not a catalog" in caplog.text
    assert operation_description("Microsoft.Widgets/gizmos/delete") == "Our gizmo words"  # the last good one


def test_an_unreachable_store_leaves_the_catalog_in_use(caplog: pytest.LogCaptureFixture) -> None:
    use_stored_operations(GIZMOS)
    with caplog.at_level(logging.WARNING, "stormwatch.normalize.catalog"):
        StoredCatalogReader(MemoryStore(unreachable=True)).refresh_if_due()
    assert "stored operation catalog not read (ServiceRequestError)" in caplog.text
    assert operation_description("Microsoft.Widgets/gizmos/delete") == "Our gizmo words"


def test_the_stored_catalog_is_read_at_the_first_batch_then_at_most_every_six_hours() -> None:
    now = [0.0]
    store = MemoryStore(encode({"operations": {"Microsoft.Widgets/gizmos/delete": {"description": "First"}}}))
    reader = StoredCatalogReader(store, clock=lambda: now[0])
    reader.refresh_if_due()
    assert operation_description("MICROSOFT.WIDGETS/GIZMOS/DELETE") == "First"
    store.document = encode({"operations": {"Microsoft.Widgets/gizmos/delete": {"description": "Second"}}})
    now[0] = 6 * 3600 - 1
    reader.refresh_if_due()
    assert store.reads == 1 and operation_description("MICROSOFT.WIDGETS/GIZMOS/DELETE") == "First"
    now[0] = 6 * 3600
    reader.refresh_if_due()
    assert store.reads == 2 and operation_description("MICROSOFT.WIDGETS/GIZMOS/DELETE") == "Second"


def test_no_stored_catalog_yet_keeps_the_shipped_one(blob_store: BlobCatalogStore) -> None:
    StoredCatalogReader(blob_store).refresh_if_due()
    assert operation_description(TDE_READ) == ("Read transparent data encryption "
                                               "(Microsoft.Sql/servers/databases/transparentDataEncryption)")
