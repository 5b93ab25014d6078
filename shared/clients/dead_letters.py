"""Dead letters: what could not be normalized, kept with its reason, position and original bytes.

One blob per batch, named from the batch's partition and sequence range plus a content hash: a
redelivered batch overwrites its own blob instead of writing the same dead letters twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol
from urllib.parse import quote

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError

from shared.clients.storage import is_outage
from shared.normalized_event import DeadLetter
from shared.values import for_log

log = logging.getLogger("stormwatch.deadletters")

if TYPE_CHECKING:  # built by `shared.clients.storage.blob_service`, which imports the SDK when first called
    from azure.storage.blob import BlobServiceClient, ContainerClient


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


class StoredLetter(NamedTuple):
    """A dead letter as an operator finds it: `id` is `<blob name>#<line number>`."""

    id: str
    letter: DeadLetter


class BlobDeadLetterStore:
    """Dead letters as JSON Lines blobs in one container (created on first use)."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._container: ContainerClient = service.get_container_client(container)
        self._ready = False

    def write(self, letters: Sequence[DeadLetter]) -> None:
        """Create the batch's blob unless it exists: a redelivered batch has the same name and content,
        and leaving the blob alone keeps the re-drive marks an operator may have set since."""
        if not letters:
            return
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()
            self._ready = True
        self._store(letters)

    def _store(self, letters: Sequence[DeadLetter]) -> None:
        payload = _lines(letters)
        name = blob_name(letters, payload)
        reasons = sorted({letter.reason.split(":", 1)[0] for letter in letters})
        metadata = {"count": str(len(letters)), "reasons": header_value("; ".join(reasons))}
        # Storage may refuse a blob for what it holds: its metadata, as far as we know, so the letters go
        # once more with nothing but the count. Refused again, they go in halves, down to the one letter
        # storage will not take, which only the log then keeps: raising would stall the partition for ever.
        for attempt in (metadata, {"count": metadata["count"]}):
            try:
                self._upload(name, payload, attempt)
            except Exception as error:
                if is_outage(error):
                    raise  # the trigger retries the batch until storage is back
                refusal = error
                continue
            return
        if len(letters) > 1:
            self._store(letters[:len(letters) // 2])
            self._store(letters[len(letters) // 2:])
            return
        letter = letters[0]
        log.error("dead letter refused by storage (%s): partition %s, sequence %s, offset %s, record %s, reason %s, "
                  "%d bytes of original, sha256 %s; the event is still in the hub until its retention ends",
                  type(refusal).__name__, letter.partition, letter.sequence_number, letter.offset, letter.record_index,
                  for_log(letter.reason[:200]), len(letter.original),
                  hashlib.sha256(letter.original.encode()).hexdigest())

    def _upload(self, name: str, payload: bytes, metadata: dict[str, str]) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._container.upload_blob(name, payload, overwrite=False, metadata=metadata)

    def letters(self, prefix: str | None = None) -> Iterator[StoredLetter]:
        """Every dead letter, oldest day first; `prefix` narrows to a day (`2026/11/20`) or one blob."""
        for blob in self._container.list_blobs(name_starts_with=prefix):
            yield from self._read(blob.name)[0]

    def get(self, letter_id: str) -> StoredLetter:
        blob, _, line = letter_id.rpartition("#")
        for stored in self._read(blob)[0]:
            if stored.id == letter_id:
                return stored
        raise KeyError(f"no dead letter {letter_id} (line {line} of {blob})")

    def mark_redriven(self, letter_ids: Sequence[str], when: datetime) -> None:
        """Set `redriven_at` on these letters, one conditional rewrite per blob (If-Match its ETag)."""
        by_blob: dict[str, set[str]] = {}
        for letter_id in letter_ids:
            by_blob.setdefault(letter_id.rpartition("#")[0], set()).add(letter_id)
        for blob, wanted in by_blob.items():
            stored, etag = self._read(blob)
            updated = [item.letter.model_copy(update={"redriven_at": when}) if item.id in wanted
                       else item.letter for item in stored]
            self._container.get_blob_client(blob).upload_blob(
                _lines(updated), overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)

    def _read(self, blob: str) -> tuple[list[StoredLetter], str]:
        download = self._container.download_blob(blob)
        lines = download.readall().splitlines()
        letters = [StoredLetter(f"{blob}#{number}", DeadLetter.model_validate_json(line))
                   for number, line in enumerate(lines, start=1) if line.strip()]
        return letters, str(download.properties.etag)


def header_value(value: str, limit: int = 1024) -> str:
    """Blob metadata travels as HTTP headers (Latin-1, no control characters): anything else is
    percent-escaped, so a reason in any script is stored; the blob body keeps it as written."""
    return quote(value, safe=" !#$&'()*+,./:;=?@[]^_`{|}~-")[:limit]


def _lines(letters: Sequence[DeadLetter]) -> bytes:
    return b"".join(orjson.dumps(letter.model_dump(mode="json")) + b"\n" for letter in letters)
