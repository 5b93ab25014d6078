"""The edge between the Functions host's Event Hub trigger and our code.

`bodies_with_positions` reads what the trigger hands over (bodies, sequence numbers, the partition id
from the trigger metadata). `trigger_batch` builds the very objects the host would, by running the
azure-functions converter over the same metadata shape, so local replays and tests take the real path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypedDict

import azure.functions as func
import orjson
from azure.functions import meta
from azure.functions.eventhub import EventHubTriggerConverter

from shared.settings import FANOUT_CONNECTION


class Position(NamedTuple):
    """Where a body came from, so a dead letter can be found and re-driven."""

    partition: str | None = None
    sequence_number: int | None = None
    offset: str | None = None
    enqueued_time: datetime | None = None


def batch_lag_ms(bodies: Sequence[tuple[bytes, Position]]) -> float | None:
    """Processing time minus the oldest enqueued time of the batch (detect reports it alike)."""
    enqueued = [position.enqueued_time for _, position in bodies if position.enqueued_time is not None]
    if not enqueued:
        return None
    return round((datetime.now(UTC) - min(enqueued)).total_seconds() * 1000, 1)


# The one retry policy of both Event Hub functions (README "Retry policy"): the trigger checkpoints even
# after a failure, so retries never stop; only outages raise, and a redelivery is exact.
class RetryPolicy(TypedDict):
    strategy: str
    max_retry_count: str
    minimum_interval: str
    maximum_interval: str


def fanout_trigger(hub_setting: str, group_setting: str) -> dict[str, Any]:
    """The Event Hub trigger of a function reading a fan-out hub (the hub and its consumer group named by app
    settings): batches of binary bodies over the identity-based connection."""
    return {"arg_name": "events", "connection": FANOUT_CONNECTION, "event_hub_name": f"%{hub_setting}%",
            "consumer_group": f"%{group_setting}%", "cardinality": "many", "data_type": "binary"}


EVENT_HUB_RETRY = RetryPolicy(strategy="exponential_backoff", max_retry_count="-1",
                              minimum_interval="00:00:05", maximum_interval="00:05:00")


def partition_of(events: Sequence[func.EventHubEvent]) -> str | None:
    """With cardinality=many every event shares the trigger metadata, which names the partition."""
    if not events:
        return None
    metadata: Any = events[0].metadata or {}
    context = metadata.get("PartitionContext") or {}
    partition = context.get("PartitionId") if isinstance(context, dict) else None
    return str(partition) if partition is not None else None


def bodies_with_positions(events: Sequence[func.EventHubEvent]) -> list[tuple[bytes, Position]]:
    partition = partition_of(events)
    return [(event.get_body(), Position(partition, event.sequence_number,
                                        None if event.offset is None else str(event.offset),
                                        event.enqueued_time))
            for event in events]


def trigger_batch(bodies: Sequence[bytes], partition: str, first_sequence: int = 0,
                  enqueued_time: datetime | None = None) -> list[func.EventHubEvent]:
    """A batch as the host delivers it with cardinality=many and dataType=binary."""
    moment = (enqueued_time or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    system_properties = [
        {"SequenceNumber": first_sequence + index, "Offset": str(4096 * (first_sequence + index)),
         "EnqueuedTimeUtc": moment, "PartitionKey": None}
        for index in range(len(bodies))
    ]
    metadata = {
        "SystemPropertiesArray": meta.Datum(orjson.dumps(system_properties).decode(), "json"),
        "PartitionContext": meta.Datum(orjson.dumps({
            "ConsumerGroup": "local", "EventHubName": "local", "PartitionId": partition,
        }).decode(), "json"),
    }
    data = meta.Datum(type="collection_bytes", value=_Collection(list(bodies)))
    events = EventHubTriggerConverter.decode(data, trigger_metadata=metadata)
    return events if isinstance(events, list) else [events]


class _Collection:
    """The host's collection_bytes payload: an object whose `.bytes` is the list of bodies."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bytes = bodies
