"""Process-wide clients built once from settings: the Functions host reuses the worker between
invocations, so producers and storage clients live at module level (connections stay warm)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from azure.eventhub import EventHubProducerClient

from shared.deadletters import BlobDeadLetterStore, DeadLetterStore
from shared.publish import EventHubPublisher, InProcessPublisher, Publisher
from shared.settings import Settings, SettingsError, env_name
from shared.storage import blob_service, default_credential


@lru_cache(maxsize=4)
def publisher_for(settings: Settings) -> Publisher:
    if settings.publisher == "memory":
        return InProcessPublisher()
    # The SDK retries transient send failures with exponential backoff before it raises.
    retry: dict[str, Any] = {"retry_total": 5, "retry_backoff_factor": 0.8, "retry_backoff_max": 30}
    namespace, connection = settings.eventhub_namespace, settings.eventhub_connection_string
    if namespace:
        return EventHubPublisher(lambda hub: EventHubProducerClient(
            fully_qualified_namespace=namespace, eventhub_name=hub, credential=default_credential(), **retry))
    if connection:
        return EventHubPublisher(lambda hub: EventHubProducerClient.from_connection_string(
            connection, eventhub_name=hub, **retry))
    raise SettingsError(f"{env_name('eventhub_namespace')} is required with the eventhub publisher")


@lru_cache(maxsize=4)
def dead_letter_store_for(settings: Settings) -> DeadLetterStore:
    return BlobDeadLetterStore(blob_service(settings), settings.deadletter_container)
