"""Process-wide clients built once from the app settings.

The Functions host reuses the worker between invocations, so producers and storage clients live for
the life of the process (connections stay warm). `reset()` forgets them after settings change (tests).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from azure.eventhub import EventHubProducerClient

from shared.deadletters import BlobDeadLetterStore, DeadLetterStore
from shared.enrich.service import Enricher, build_enricher
from shared.publish import EventHubPublisher, InProcessPublisher, Publisher
from shared.settings import SettingsError, env_name, get_settings
from shared.storage import blob_service, default_credential


@cache
def publisher() -> Publisher:
    settings = get_settings()
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


@cache
def dead_letter_store() -> DeadLetterStore:
    settings = get_settings()
    return BlobDeadLetterStore(blob_service(settings), settings.deadletter_container)


@cache
def enricher() -> Enricher:
    """enrich_fn's service: ARM client, cache table and service tag index stay warm in the worker."""
    return build_enricher(get_settings())


def reset() -> None:
    """Forget settings and clients so the next call reads the environment again."""
    get_settings.cache_clear()
    publisher.cache_clear()
    dead_letter_store.cache_clear()
    enricher.cache_clear()
