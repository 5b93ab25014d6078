"""Fan-out of normalized events to Event Hubs behind a small interface.

The deployed publisher uses the azure-eventhub producer (not an output binding) because bindings cannot
set partition keys and their failures cannot be caught in code. Events with one partition key (the
subscription or tenant) stay in order on one partition; batches are kept under the hub's size limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Protocol

from azure.eventhub import EventData, EventDataBatch, EventHubProducerClient


class OutgoingEvent(NamedTuple):
    partition_key: str
    body: bytes


class EventTooLargeError(ValueError):
    """One event alone exceeds the batch limit (normalize strips `raw` before this can happen)."""


class Publisher(Protocol):
    def publish(self, hub: str, events: Sequence[OutgoingEvent]) -> None:
        """Send every event or raise: a partial failure must fail the batch, never skip events."""


class InProcessPublisher:
    """Keeps published events per hub in memory: the local runner feeds detect from it."""

    def __init__(self) -> None:
        self.hubs: dict[str, list[OutgoingEvent]] = defaultdict(list)

    def publish(self, hub: str, events: Sequence[OutgoingEvent]) -> None:
        self.hubs[hub].extend(events)


def pack_batches(events: Sequence[OutgoingEvent],
                 new_batch: Callable[[str], EventDataBatch]) -> Iterator[EventDataBatch]:
    """Group events by partition key into as few batches as their size limit allows, in order."""
    by_key: dict[str, list[bytes]] = defaultdict(list)
    for event in events:
        by_key[event.partition_key].append(event.body)
    for key, bodies in by_key.items():
        batch = new_batch(key)
        for body in bodies:
            if _added(batch, body):
                continue
            if len(batch) == 0:
                raise EventTooLargeError(f"event of {len(body)} bytes exceeds the batch limit")
            yield batch
            batch = new_batch(key)
            if not _added(batch, body):
                raise EventTooLargeError(f"event of {len(body)} bytes exceeds the batch limit")
        if len(batch):
            yield batch


def _added(batch: EventDataBatch, body: bytes) -> bool:
    try:
        batch.add(EventData(body))
    except ValueError:  # the SDK's way of saying "batch full"
        return False
    return True


class EventHubPublisher:
    """One producer client per hub, created once per process and reused across invocations."""

    def __init__(self, connect: Callable[[str], EventHubProducerClient]) -> None:
        self._connect = connect
        self._producers: dict[str, EventHubProducerClient] = {}

    def _producer(self, hub: str) -> EventHubProducerClient:
        if hub not in self._producers:
            self._producers[hub] = self._connect(hub)
        return self._producers[hub]

    def publish(self, hub: str, events: Sequence[OutgoingEvent]) -> None:
        producer = self._producer(hub)
        for batch in pack_batches(events, lambda key: producer.create_batch(partition_key=key)):
            producer.send_batch(batch)
