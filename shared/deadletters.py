"""Dead letters: what could not be normalized, kept with its reason, position and original bytes.

One blob per batch, named from the batch's partition and sequence range plus a content hash: a
redelivered batch overwrites its own blob instead of writing the same dead letters twice.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import orjson
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.events import DeadLetter


class DeadLetterStore(Protocol):
    def write(self, letters: Sequence[DeadLetter]) -> None:
        """Persist the dead letters of one batch; raise when the store cannot be reached."""


class InMemoryDeadLetterStore:
    """Keeps dead letters in process: the local runner and tests read them back from `letters`."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def write(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


def blob_name(letters: Sequence[DeadLetter], payload: bytes) -> str:
    """`YYYY/MM/DD/<partition>/<first seq>-<last seq>-<hash>.jsonl`, stable for the same batch."""
    first, last = letters[0], letters[-1]
    day = (first.enqueued_time or datetime.now(UTC)).strftime("%Y/%m/%d")
    digest = hashlib.sha256(payload).hexdigest()[:16]
    partition = first.partition if first.partition is not None else "local"
    return f"{day}/{partition}/{first.sequence_number}-{last.sequence_number}-{digest}.jsonl"


class BlobDeadLetterStore:
    """Dead letters as JSON Lines blobs in one container (created on first use)."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._container: ContainerClient = service.get_container_client(container)
        self._ready = False

    def write(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()
            self._ready = True
        payload = b"".join(orjson.dumps(letter.model_dump(mode="json")) + b"\n" for letter in letters)
        reasons = sorted({letter.reason.split(":", 1)[0] for letter in letters})
        self._container.upload_blob(
            blob_name(letters, payload), payload, overwrite=True,
            metadata={"count": str(len(letters)), "reasons": "; ".join(reasons)[:1024]},
        )
