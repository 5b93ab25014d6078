"""normalize_fn end to end: indexed bindings, the registered handler over real EventHubEvent batches,
dead letters in a real Blob store (Azurite), fan-out routing, and failure when the store is gone."""

from __future__ import annotations

import ast
import base64
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import orjson
import pytest
from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient

from shared.cli import azurite
from shared.clients import wiring
from shared.clients.eventhubs import trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.clients.storage import emulator_connection_string
from shared.normalize.batch import partition_key
from tests.conftest import REPO, indexed_functions, sample

ENQUEUED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def registered(name: str) -> Any:
    return indexed_functions()[name]


def test_bindings_are_an_event_hub_batch_trigger_named_by_app_settings() -> None:
    function = registered("normalize")
    trigger = orjson.loads(function.get_function_json())["bindings"][0]
    assert trigger["type"] == "eventHubTrigger"
    assert trigger["cardinality"].lower() == "many"
    assert trigger["dataType"].lower() == "binary"
    assert trigger["eventHubName"] == "%STORMWATCH_RAW_HUB%"
    assert trigger["consumerGroup"] == "%STORMWATCH_NORMALIZE_CONSUMER_GROUP%"
    assert trigger["connection"] == "RawEventHubConnection"


def test_retry_policy_retries_until_storage_is_back() -> None:
    retry = registered("normalize").get_setting("retry_policy").get_dict_repr()
    assert retry["strategy"] == "exponential_backoff"
    assert retry["max_retry_count"] == "-1"
    assert retry["minimum_interval"] == "00:00:05" and retry["maximum_interval"] == "00:05:00"


def test_function_app_registers_one_blueprint_per_package_and_nothing_else() -> None:
    tree = ast.parse((REPO / "function_app.py").read_text())
    imported = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)} - {None}
    packages = {path.parent.name for path in REPO.glob("*_fn/__init__.py")}
    assert imported == packages
    registered_blueprints = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                             and getattr(node.func, "attr", "") == "register_functions"]
    assert len(registered_blueprints) == len(packages)
    assert "normalize" in indexed_functions()


@pytest.fixture
def run_normalize(app_env: pytest.MonkeyPatch) -> Callable[..., tuple[InProcessPublisher, str]]:
    """Call the registered handler with a host-shaped batch; dead letters go to a fresh container."""
    container = f"dl-{uuid.uuid4().hex[:12]}"
    app_env.setenv("STORMWATCH_DEADLETTER_CONTAINER", container)
    wiring.reset()

    def run(bodies: list[bytes], partition: str = "7",
            first_sequence: int = 100) -> tuple[InProcessPublisher, str]:
        # Event Hubs redelivers an event with its original enqueued time: keep it fixed here too.
        events: list[func.EventHubEvent] = trigger_batch(bodies, partition, first_sequence, ENQUEUED)
        registered("normalize").get_user_function()(events)
        publisher = wiring.publisher()
        assert isinstance(publisher, InProcessPublisher)
        return publisher, container

    return run


def dead_letters_in(container: str, connection_string: str) -> list[tuple[str, dict[str, Any]]]:
    client = BlobServiceClient.from_connection_string(connection_string).get_container_client(container)
    found: list[tuple[str, dict[str, Any]]] = []
    if not client.exists():  # created with the first dead letter
        return found
    for blob in client.list_blobs():
        for line in client.download_blob(blob.name).readall().splitlines():
            found.append((blob.name, orjson.loads(line)))
    return found


def test_batch_with_bad_bodies_goes_on_and_dead_letters_each_with_its_position(
        run_normalize: Callable[..., tuple[InProcessPublisher, str]],
        azurite_instance: azurite.Azurite) -> None:
    bodies = [sample("activity/vm-start.json"), sample("bad/mixed.json"), sample("bad/truncated.json"),
              sample("signin/signin-failure.json")]
    publisher, container = run_normalize(bodies)
    letters = dead_letters_in(container, azurite_instance.connection_string)
    events = publisher.hubs["normalized"]
    assert len(events) == 2 + 1 + 1
    assert len(letters) == 3 + 1
    assert len({name for name, _ in letters}) == 1, "one blob per batch"
    by_sequence = {(letter["sequence_number"], letter["record_index"]): letter for _, letter in letters}
    truncated = by_sequence[(102, None)]
    assert truncated["reason"].startswith("body is not valid JSON")
    assert truncated["partition"] == "7" and truncated["offset"] == str(4096 * 102)
    assert base64.b64decode(truncated["original"]) == sample("bad/truncated.json")
    assert base64.b64decode(by_sequence[(101, 1)]["original"]) == b"42"
    assert by_sequence[(101, 3)]["reason"] == "record is not an object but null"


def test_redelivered_batch_overwrites_its_dead_letter_blob(
        run_normalize: Callable[..., tuple[InProcessPublisher, str]],
        azurite_instance: azurite.Azurite) -> None:
    _, container = run_normalize([sample("bad/mixed.json")])
    first = dead_letters_in(container, azurite_instance.connection_string)
    run_normalize([sample("bad/mixed.json")])
    assert dead_letters_in(container, azurite_instance.connection_string) == first


def test_partition_key_is_the_subscription_or_tenant_and_user(
        run_normalize: Callable[..., tuple[InProcessPublisher, str]]) -> None:
    publisher, _ = run_normalize([sample("activity/keyvault-delete.json"), sample("audit/user-created.json")])
    keys = [event.partition_key for event in publisher.hubs["normalized"]]
    assert keys[:2] == ["a1b2c3d4-1111-4111-8111-000000000001"] * 2
    tenant, user = keys[2].split("/")
    assert tenant == "72f988bf-0000-4000-8000-000000000001" and len(user) == 16


def test_entra_events_spread_per_user_and_keep_one_user_together() -> None:
    def key(**fields: str | None) -> str:
        return partition_key({"subscription_id": None, "tenant_id": "t1", "source": "signin", "actor": None,
                              "source_ip": None, **fields})

    assert key(actor="Carol@Contoso.example") == key(actor="carol@contoso.example") != key(actor="dave@x")
    assert key(actor="a" * 5000).startswith("t1/") and len(key(actor="a" * 5000)) <= 128, "Event Hubs' limit"
    assert key(source_ip="198.51.100.7") != key(source_ip="198.51.100.8"), "no user: spread by address"
    assert key() == "t1" and key(source="activity", actor="carol") == "t1"
    assert key(subscription_id="sub", actor="carol") == "sub", "resource events keep their subscription"


def test_routing_table_sends_a_source_to_extra_hubs(
        run_normalize: Callable[..., tuple[InProcessPublisher, str]], app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("STORMWATCH_ROUTES", '{"signin": ["identity", "soc"]}')
    wiring.reset()
    publisher, _ = run_normalize([sample("signin/noninteractive.json"), sample("activity/vm-start.json")])
    assert len(publisher.hubs["normalized"]) == 4
    assert len(publisher.hubs["identity"]) == len(publisher.hubs["soc"]) == 2
    assert {orjson.loads(event.body)["source"] for event in publisher.hubs["identity"]} == {"signin"}


def test_raw_record_travels_unless_switched_off(
        run_normalize: Callable[..., tuple[InProcessPublisher, str]], app_env: pytest.MonkeyPatch) -> None:
    publisher, _ = run_normalize([sample("activity/vm-start.json")])
    assert orjson.loads(publisher.hubs["normalized"][0].body)["raw"]["operationName"]
    app_env.setenv("STORMWATCH_INCLUDE_RAW", "false")
    wiring.reset()
    publisher, _ = run_normalize([sample("activity/vm-start.json")])
    assert orjson.loads(publisher.hubs["normalized"][0].body)["raw"] is None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_unreachable_dead_letter_store_raises_so_the_batch_is_retried(
        app_env: pytest.MonkeyPatch) -> None:
    closed = free_port()
    app_env.setenv("STORMWATCH_STORAGE_CONNECTION_STRING",
                   emulator_connection_string({"blob": closed, "queue": closed, "table": closed}))
    wiring.reset()
    events = trigger_batch([sample("bad/mixed.json")], "0")
    with pytest.raises(AzureError):
        registered("normalize").get_user_function()(events)
    publisher = wiring.publisher()
    assert isinstance(publisher, InProcessPublisher)
    assert not publisher.hubs, "nothing is published before the dead letters are safe"


def test_one_structured_log_line_per_batch_with_counts_and_lag(
        run_normalize: Callable[..., tuple[InProcessPublisher, str]], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="stormwatch.normalize"):
        run_normalize([sample("activity/vm-start.json"), sample("bad/mixed.json")])
    [line] = [record for record in caplog.records if record.name == "stormwatch.normalize"]
    report = orjson.loads(line.getMessage())
    assert line.levelname == "WARNING", "a batch with dead letters is a warning Application Insights can alert on"
    assert (report["records_in"], report["events_out"], report["dead_letters"]) == (6, 3, 3)
    assert report["lag_ms"] > 0 and report["duration_ms"] > 0
    assert report["partition"] == "7"
    assert report["mappers"] == "interpreted", "the tests run the sources; the package says compiled"


def test_the_batch_line_counts_events_per_subscription_and_entra_tenant(
        run_normalize: Callable[..., tuple[InProcessPublisher, str]], caplog: pytest.LogCaptureFixture) -> None:
    """The `silence` health alert (infra/modules/health.bicep) watches these origins for one gone quiet."""
    with caplog.at_level("INFO", logger="stormwatch.normalize"):
        run_normalize([sample("activity/vm-start.json"), sample("signin/managed-identity.json")])
    [line] = [record for record in caplog.records if record.name == "stormwatch.normalize"]
    assert orjson.loads(line.getMessage())["origins"] == {
        "a1b2c3d4-1111-4111-8111-000000000001": 2, "tenant:72f988bf-0000-4000-8000-000000000001": 1}
