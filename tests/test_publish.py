"""Fan-out batching with the SDK's real EventDataBatch, and the 1 MB event limit.

There is no Event Hubs emulator here, so the producer itself is replaced by a recorder that creates
real `EventDataBatch` objects (the SDK's own size accounting) and keeps what `send_batch` receives.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from azure.eventhub import EventData, EventDataBatch

from shared.clients.publisher import EventHubPublisher, EventTooLargeError, OutgoingEvent, pack_batches
from shared.normalize.batch import MAX_EVENT_BYTES, encode_event
from shared.normalize.mappers import MappingError

ONE_MB = 1024 * 1024


def real_batch(key: str) -> EventDataBatch:
    return EventDataBatch(max_size_in_bytes=ONE_MB, partition_key=key)


def bodies_of(batch: EventDataBatch) -> list[bytes]:
    return [event.body_as_str().encode() for event in batch._internal_events
            if isinstance(event, EventData)]


def test_events_are_split_into_batches_under_one_megabyte_in_order() -> None:
    events = [OutgoingEvent("sub-a", orjson.dumps({"n": index, "pad": "x" * 100_000})) for index in range(25)]
    batches = list(pack_batches(events, real_batch))
    assert len(batches) >= 3
    assert all(batch.size_in_bytes <= ONE_MB for batch in batches)
    sent = [orjson.loads(body)["n"] for batch in batches for body in bodies_of(batch)]
    assert sent == list(range(25)), "every event once, in order"


def test_one_batch_per_partition_key_keeps_each_key_together() -> None:
    events = [OutgoingEvent(key, key.encode()) for key in ("a", "b", "a", "c", "b")]
    batches = list(pack_batches(events, real_batch))
    assert [(batch._partition_key, bodies_of(batch)) for batch in batches] == [
        ("a", [b"a", b"a"]), ("b", [b"b", b"b"]), ("c", [b"c"])]


def test_a_single_event_over_the_limit_is_an_error_not_a_silent_skip() -> None:
    with pytest.raises(EventTooLargeError):
        list(pack_batches([OutgoingEvent("k", b"x" * (ONE_MB + 1))], real_batch))


class RecordingProducer:
    """Stands in for EventHubProducerClient (no Event Hubs here): real batches, recorded sends."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[EventDataBatch] = []
        self.fail_after = fail_after

    def create_batch(self, partition_key: str) -> EventDataBatch:
        return real_batch(partition_key)

    def send_batch(self, batch: EventDataBatch) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("hub unreachable")
        self.sent.append(batch)


def test_publisher_sends_every_batch_and_raises_when_a_send_fails() -> None:
    producer = RecordingProducer()
    publisher = EventHubPublisher(lambda hub: producer)  # type: ignore[arg-type, return-value]
    events = [OutgoingEvent("sub", b"y" * 400_000) for _ in range(5)]
    publisher.publish("normalized", events)
    assert sum(len(batch) for batch in producer.sent) == 5
    failing = RecordingProducer(fail_after=1)
    publisher = EventHubPublisher(lambda hub: failing)  # type: ignore[arg-type, return-value]
    with pytest.raises(ConnectionError):
        publisher.publish("normalized", events)


def test_publisher_creates_one_producer_per_hub_and_reuses_it() -> None:
    created: list[str] = []

    def connect(hub: str) -> Any:
        created.append(hub)
        return RecordingProducer()

    publisher = EventHubPublisher(connect)
    for hub in ("normalized", "identity", "normalized"):
        publisher.publish(hub, [OutgoingEvent("k", b"{}")])
    assert created == ["normalized", "identity"]


def event_with(raw_size: int, details_size: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    event: dict[str, Any] = {"event_id": "e", "details": {"pad": "d" * details_size} if details_size else None}
    return event, {"blob": "r" * raw_size}


def test_encode_event_keeps_raw_when_it_fits() -> None:
    event, raw = event_with(1000)
    assert orjson.loads(encode_event(event, raw))["raw"] == raw


def test_encode_event_drops_raw_and_says_so_when_over_the_limit() -> None:
    event, raw = event_with(MAX_EVENT_BYTES)
    decoded = orjson.loads(encode_event(event, raw))
    assert decoded["raw"] is None
    assert "raw_omitted" in decoded["details"]


def test_encode_event_refuses_an_event_too_large_even_without_raw() -> None:
    event, raw = event_with(10, details_size=MAX_EVENT_BYTES)
    with pytest.raises(MappingError, match="exceeds"):
        encode_event(event, raw)
