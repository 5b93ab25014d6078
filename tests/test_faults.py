"""Fault injection: storage that goes away half-way, a dead-letter store that is unreachable, a fan-out
that fails, and slow storage — through the registered handlers, the production storage clients
(their retry and timeout options) and a TCP proxy in front of the session's Azurite (`faultproxy`).

Each test plays the Functions host: the handler raises, the retry policy redelivers the same batch
once storage is back, and the end state is compared with what a clean run gives.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import azure.functions as func
import orjson
import pytest
from azure.core.exceptions import AzureError, ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient
from azure.eventhub import EventHubProducerClient
from azure.eventhub.exceptions import EventHubError

from shared.cli import azurite
from shared.clients import storage, wiring
from shared.clients.eventhubs import Position, trigger_batch
from shared.clients.publisher import EventHubPublisher, InProcessPublisher, OutgoingEvent
from shared.clients.storage import emulator_connection_string
from shared.normalize.batch import normalize_bodies
from shared.settings import Settings
from tests.conftest import indexed_functions, sample
from tests.detect_fixtures import BURST_RULE, Tables, deletes, rule_from, tables
from tests.faultproxy import FaultProxy
from tests.test_normalize_fn import dead_letters_in, free_port

__all__ = ["tables"]  # the fixture, used by name

CALLERS = [f"caller-{n}" for n in range(12)]
# caller-n deletes n + 5 times: callers 5 to 11 reach the rule's 10 and raise one alert each.
EVENTS = [item for n, actor in enumerate(CALLERS) for item in deletes(n + 5, first=100 * n, actor=actor)]


def handler(name: str) -> Callable[[list[func.EventHubEvent]], None]:
    function: Callable[[list[func.EventHubEvent]], None] = indexed_functions()[name].get_user_function()
    return function


def storage_through(proxy: FaultProxy, ports: dict[str, int], service: str) -> str:
    """Azurite's connection string with one service (`blob`, `table`) behind the proxy."""
    return emulator_connection_string({**ports, service: proxy.port})


@pytest.fixture
def table_proxy(tables: Tables, azurite_instance: azurite.Azurite, app_env: pytest.MonkeyPatch,
                tmp_path: Path) -> Iterator[FaultProxy]:
    """detect_fn's settings with the Table endpoint behind a proxy and the burst rule loaded."""
    (tmp_path / "burst.yaml").write_text(BURST_RULE)
    with FaultProxy(azurite_instance.ports["table"]) as proxy:
        app_env.setenv("STORMWATCH_STORAGE_CONNECTION_STRING",
                       storage_through(proxy, azurite_instance.ports, "table"))
        app_env.setenv("STORMWATCH_RULES_DIR", str(tmp_path))
        wiring.reset()
        yield proxy


def published(hub: str) -> list[bytes]:
    publisher = wiring.publisher()
    assert isinstance(publisher, InProcessPublisher)
    return [event.body for event in publisher.hubs.get(hub, [])]


def clean_requests(proxy: FaultProxy, app_env: pytest.MonkeyPatch, batch: list[func.EventHubEvent],
                   tables: Tables) -> int:
    """Table requests of a clean run of `batch` (on throw-away tables), so cuts follow the code's I/O."""
    app_env.setenv("STORMWATCH_STATE_TABLE", f"clean{uuid.uuid4().hex[:12]}")
    app_env.setenv("STORMWATCH_ALERTS_TABLE", f"clean{uuid.uuid4().hex[:12]}")
    wiring.reset()
    first = proxy.requests
    handler("detect")(batch)
    app_env.setenv("STORMWATCH_STATE_TABLE", tables.state)
    app_env.setenv("STORMWATCH_ALERTS_TABLE", tables.alerts)
    wiring.reset()
    return proxy.requests - first


# The cut lands among state reads (10 %), state writes (50 %), alert rows (90 %) of a clean run.
@pytest.mark.parametrize("cut_at", [0.1, 0.5, 0.9])
def test_state_store_cut_half_way_raises_and_the_redelivered_batch_is_exact(
        table_proxy: FaultProxy, tables: Tables, tmp_path: Path, app_env: pytest.MonkeyPatch,
        cut_at: float) -> None:
    batch = trigger_batch([orjson.dumps(item) for item in EVENTS], partition="4", first_sequence=1000)
    table_proxy.fail_after(round(clean_requests(table_proxy, app_env, batch, tables) * cut_at))
    with pytest.raises(AzureError):
        handler("detect")(batch)
    before_failure = Counter(orjson.loads(body)["alert_id"] for body in published("alerts"))
    table_proxy.heal()
    handler("detect")(batch)  # the retry policy redelivers the same batch
    handler("detect")(batch)  # and a redelivery after success (lost checkpoint) changes nothing
    burst = rule_from(tmp_path, BURST_RULE)
    assert {actor: tables.count_of(burst, actor) for actor in CALLERS} == {
        actor: n + 5 for n, actor in enumerate(CALLERS)}
    alerts = [orjson.loads(body) for body in published("alerts")]
    assert sorted({alert["group"]["actor"] for alert in alerts}) == sorted(CALLERS[5:])
    assert tables.alert_ids() == {alert["alert_id"] for alert in alerts}
    assert len(tables.alert_ids()) == len(CALLERS[5:]), "each alert stored exactly once"
    repeats = Counter(alert["alert_id"] for alert in alerts) - Counter(set(before_failure))
    assert max(repeats.values()) == 1, "published once, or again only if the failed run had published it"


# --- normalize: dead-letter store and fan-out -------------------------------------------------------

BODIES = [sample("activity/vm-start.json"), sample("bad/mixed.json"), sample("signin/noninteractive.json"),
          sample("bad/truncated.json"), sample("activity/keyvault-delete.json")]


def records_in(bodies: Sequence[bytes]) -> int:
    return normalize_bodies([(body, Position()) for body in bodies]).records_in


@pytest.fixture
def blob_proxy(app_env: pytest.MonkeyPatch, azurite_instance: azurite.Azurite) -> Iterator[tuple[FaultProxy, str]]:
    """normalize_fn's settings with the Blob endpoint behind a proxy and a fresh dead-letter container."""
    container = f"dl-{uuid.uuid4().hex[:12]}"
    with FaultProxy(azurite_instance.ports["blob"]) as proxy:
        app_env.setenv("STORMWATCH_STORAGE_CONNECTION_STRING", storage_through(proxy, azurite_instance.ports, "blob"))
        app_env.setenv("STORMWATCH_DEADLETTER_CONTAINER", container)
        app_env.setenv("STORMWATCH_ROUTES", '{"signin": ["identity"]}')
        wiring.reset()
        yield proxy, container


def test_dead_letter_store_cut_after_creating_its_container_raises_then_every_record_is_accounted_for(
        blob_proxy: tuple[FaultProxy, str], azurite_instance: azurite.Azurite) -> None:
    proxy, container = blob_proxy
    batch = trigger_batch(BODIES, partition="2", first_sequence=50)
    proxy.fail_after(1)  # the container is created, the dead letters' upload never arrives
    started = time.monotonic()
    with pytest.raises(AzureError):
        handler("normalize")(batch)
    assert time.monotonic() - started < 60, "the client gives up within a minute: the retry policy waits"
    assert published("normalized") == [], "nothing is published before the dead letters are safe"
    proxy.heal()
    handler("normalize")(batch)
    handler("normalize")(batch)  # redelivered again after success: same blob, events at least once
    dead = dead_letters_in(container, azurite_instance.connection_string)
    events = {orjson.loads(body)["event_id"] for body in published("normalized")}
    assert records_in(BODIES) == len(events) + len(dead)
    identity = {orjson.loads(body)["event_id"] for body in published("identity")}
    assert identity and identity <= events


class FailingPublisher(InProcessPublisher):
    """Stands in for the Event Hubs producer (no hub can run here): every send after `sends` fails."""

    def __init__(self, sends: int) -> None:
        super().__init__()
        self.sends = sends

    def publish(self, hub: str, events: Sequence[OutgoingEvent]) -> None:
        if self.sends == 0:
            raise ServiceResponseError(f"send to {hub} failed")
        self.sends -= 1
        super().publish(hub, events)


def test_fan_out_failing_on_the_second_hub_raises_and_redelivery_publishes_every_event(
        blob_proxy: tuple[FaultProxy, str], monkeypatch: pytest.MonkeyPatch) -> None:
    publisher = FailingPublisher(sends=1)
    monkeypatch.setattr(wiring, "publisher", functools.cache(lambda: publisher))
    batch = trigger_batch(BODIES, partition="2", first_sequence=50)
    with pytest.raises(ServiceResponseError):
        handler("normalize")(batch)
    assert set(publisher.hubs) == {"normalized"}, "the first hub got the batch, the second did not"
    publisher.sends = 2
    handler("normalize")(batch)
    normalized = [orjson.loads(event.body) for event in publisher.hubs["normalized"]]
    assert set(Counter(event["event_id"] for event in normalized).values()) == {2}, \
        "at least once: the first hub saw the batch twice"
    assert len(normalized) == 2 * (records_in(BODIES) - 4), "every record but the 4 dead letters"
    signins = {event["event_id"] for event in normalized if event["source"] == "signin"}
    assert signins and {orjson.loads(event.body)["event_id"] for event in publisher.hubs["identity"]} == signins


def test_event_hubs_producer_retries_with_backoff_then_raises(azurite_instance: azurite.Azurite) -> None:
    """The real producer against a loopback port that refuses every connection (an emulator-style
    connection string: plain AMQP on 127.0.0.1). Short backoff here; the app's is in shared/clients/wiring.py."""
    with FaultProxy(free_port()) as proxy:
        proxy.fail_after(0)
        connection = (f"Endpoint=sb://127.0.0.1:{proxy.port};SharedAccessKeyName=test;"
                      "SharedAccessKey=dGVzdA==;UseDevelopmentEmulator=true")
        publisher = EventHubPublisher(lambda hub: EventHubProducerClient.from_connection_string(
            connection, eventhub_name=hub, retry_total=2, retry_backoff_factor=0.2, retry_backoff_max=1))
        started = time.monotonic()
        with pytest.raises(EventHubError):
            publisher.publish("normalized", [OutgoingEvent("key", b"{}")])
        assert proxy.connections >= 3, "the first try and two retries"
        assert time.monotonic() - started >= 0.2 + 0.4 - 0.05, "with exponential backoff in between"


# --- slow storage -----------------------------------------------------------------------------------


def test_slow_state_store_still_completes_the_batch_and_says_how_long_it_took(
        table_proxy: FaultProxy, tables: Tables, caplog: pytest.LogCaptureFixture) -> None:
    table_proxy.delay = 0.05  # every Table request 50 ms late (Azurite alone answers in ~1 ms)
    batch = trigger_batch([orjson.dumps(item) for item in EVENTS], partition="5", first_sequence=0)
    with caplog.at_level("INFO", logger="stormwatch.detect"):
        handler("detect")(batch)
    [line] = [record for record in caplog.records if record.name == "stormwatch.detect"]
    report = orjson.loads(line.getMessage())
    assert report["duration_ms"] > 50 * 3, "at least the creations, one read/write round and the alerts"
    assert len(tables.alert_ids()) == len(CALLERS[5:])


def test_storage_slower_than_the_read_timeout_fails_loudly_instead_of_hanging(
        table_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production timeouts are 10 s to connect and 30 s to read; shortened here to keep the test short."""
    monkeypatch.setitem(storage._TIMEOUTS, "read_timeout", 0.3)
    wiring.reset()
    table_proxy.delay = 2.0
    started = time.monotonic()
    with pytest.raises(ServiceResponseError):
        handler("detect")(trigger_batch([orjson.dumps(item) for item in EVENTS[:5]], partition="6"))
    assert time.monotonic() - started < 30


def test_every_table_client_shares_one_transport_whose_session_exists_before_any_thread_uses_it() -> None:
    """azure-core makes its session at the first request and re-mounts its adapters meanwhile; detect's 8 state
    threads making first requests at once could find no adapter for http:// (the soak hit it once in 200,000
    events). White-box: what matters is that the session is made before the client is handed out."""
    service = storage.table_service(Settings(storage_connection_string=storage.DEV_CONNECTION_STRING))
    [transport] = {_transport_of(service.get_table_client(name)) for name in ("detectionstate", "alerts")}
    assert transport.session is not None


def _transport_of(table: TableClient) -> RequestsTransport:
    transport: object = table._client._client._pipeline._transport
    while not isinstance(transport, RequestsTransport):
        transport = transport._transport  # type: ignore[attr-defined]  # azure-data-tables' TransportWrapper
    return transport
