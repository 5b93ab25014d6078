"""Process-wide clients built once from the app settings.

The Functions host reuses the worker between invocations, so producers and storage clients live for
the life of the process (connections stay warm). Each engine declares its own process-wide objects with
`process_wide` (the enricher lives in `shared.enrich.service`), so this module imports no engine, and
`reset()` forgets them all after settings change (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import _lru_cache_wrapper, cache
from typing import TYPE_CHECKING, Any, TypeVar

from azure.eventhub import EventHubProducerClient

from shared.clients.dead_letters import BlobDeadLetterStore, DeadLetterStore
from shared.clients.publisher import EventHubPublisher, InProcessPublisher, Publisher
from shared.clients.storage import blob_service, default_credential, local_connection_string
from shared.normalized_event import DeadLetter
from shared.settings import Settings, SettingsError, env_name, get_settings

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

_Built = TypeVar("_Built")
_FORGET: list[Callable[[], None]] = []


def process_wide(build: Callable[[], _Built]) -> _lru_cache_wrapper[_Built]:
    """Build once per worker process; `reset()` forgets it."""
    built = cache(build)
    _FORGET.append(built.cache_clear)
    return built


@process_wide
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


@process_wide
def blob_client() -> BlobServiceClient:
    """The worker's one Blob client (one connection pool): dead letters, the stored catalog, the rules container."""
    return blob_service(get_settings())


class LazyDeadLetterStore:
    """The Blob store, built by the first batch that has a dead letter: most batches have none, and
    azure.storage.blob is the largest import of a cold start. The settings are checked at once."""

    def __init__(self, settings: Settings) -> None:
        if not (local_connection_string(settings) or settings.blob_endpoint):
            blob_service(settings)  # raises the SettingsError that names what to set
        self._settings = settings
        self._store: BlobDeadLetterStore | None = None

    def write(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        if self._store is None:
            self._store = BlobDeadLetterStore(blob_client(), self._settings.deadletter_container)
        self._store.write(letters)


@process_wide
def dead_letter_store() -> DeadLetterStore:
    return LazyDeadLetterStore(get_settings())


def reset() -> None:
    """Forget settings and clients so the next call reads the environment again."""
    get_settings.cache_clear()
    for forget in _FORGET:
        forget()
