"""normalize_fn's work: Event Hub bodies in → normalized events (fanned out) + dead letters.

`normalize_bodies` is pure (bytes in, encoded events and dead letters out) so it is trivially testable
and fast; `process_batch` adds the I/O in the order that loses nothing: dead letters first (idempotent
blob per batch), then the fan-out. A failure of either raises, so the trigger's retry policy redelivers
the batch; a bad record never raises.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.machinery
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from shared.clients.dead_letters import DeadLetterStore
from shared.clients.eventhubs import Position, batch_lag_ms
from shared.clients.publisher import OutgoingEvent, Publisher
from shared.normalize import mappers
from shared.normalize.catalog_sync import StoredCatalogReader
from shared.normalize.mappers import MappingError, map_record, split_body
from shared.normalized_event import DeadLetter
from shared.settings import Settings

log = logging.getLogger("stormwatch.normalize")

# Event Hubs Standard accepts 1 MiB per event including AMQP overhead: keep a margin.
MAX_EVENT_BYTES = 1_000_000
# Which build runs, reported in every batch line: `make package` deploys the mappers compiled (extension
# modules), a remote build deploys the sources.
MAPPERS = "compiled" if (mappers.__file__ or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) \
    else "interpreted"


class NormalizedOutput(NamedTuple):
    source: str
    partition_key: str
    body: bytes
    # Where it came from: the subscription id, else `tenant:<id>` (Entra ID), else "unknown". The batch line
    # counts events per origin, which the `silence` health alert watches for a subscription gone quiet.
    origin: str


@dataclass
class BatchResult:
    records_in: int = 0
    events: list[NormalizedOutput] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def events_by_source(self) -> Counter[str]:
        return Counter(output.source for output in self.events)

    def events_by_origin(self) -> Counter[str]:
        return Counter(output.origin for output in self.events)

    def dead_letters_by_reason(self) -> Counter[str]:
        return Counter(letter.reason.split(":", 1)[0] for letter in self.dead_letters)


# Bounds on one body's cost, whatever it holds. A body past one of them is kept whole as ONE dead letter
# (its original bytes, counted as one record in) and none of its records is published; re-driving the
# letter normalizes the body once. Event Hubs' own limit on an event is 1 MB.
MAX_BODY_BYTES = 1_048_576
# Azure's exports carry a few hundred records per body; 1 MB of `[0,0,...]` is half a million.
MAX_RECORDS_PER_BODY = 5_000
# A body with more failing records than this is one letter, not thousands of small ones.
MAX_DEAD_LETTERS_PER_BODY = 100
# Entra ID's logs: keyed per user (`partition_key`), a tenant-wide key would make one hot partition.
IDENTITY_SOURCES = frozenset({"signin", "audit"})


def normalize_bodies(bodies: Iterable[tuple[bytes, Position]], include_raw: bool = True) -> BatchResult:
    """Every record of every body becomes one encoded event or one dead letter (never an exception)."""
    result = BatchResult()
    for body, position in bodies:
        _normalize_body(body, position, include_raw, result)
    return result


def _normalize_body(body: bytes, position: Position, include_raw: bool, result: BatchResult) -> None:
    def keep_whole(reason: str) -> None:
        result.records_in += 1
        result.dead_letters.append(_dead_letter(reason, position, None, body))

    if len(body) > MAX_BODY_BYTES:
        keep_whole(f"body too large: {len(body)} bytes, more than {MAX_BODY_BYTES}")
        return
    try:
        records = split_body(body)
    except Exception as error:  # whatever one body causes is its dead letter, never a retry
        keep_whole(_reason(error))
        return
    if len(records) > MAX_RECORDS_PER_BODY:
        keep_whole(f"too many records: {len(records)} in one body, more than {MAX_RECORDS_PER_BODY}")
        return
    events: list[NormalizedOutput] = []
    letters: list[DeadLetter] = []
    for index, record in enumerate(records):
        try:
            event = map_record(record)
            encoded = encode_event(event, record if include_raw else None)
        except Exception as error:  # a mapper bug or an odd value is the record's dead letter
            if len(letters) == MAX_DEAD_LETTERS_PER_BODY:
                keep_whole(f"too many dead letters: more than {MAX_DEAD_LETTERS_PER_BODY} of the body's "
                           f"{len(records)} records cannot be normalized; the first: {letters[0].reason}")
                return
            letters.append(_dead_letter(_reason(error), position, index, _record_bytes(record)))
            continue
        origin = event["subscription_id"] or (f"tenant:{event['tenant_id']}" if event["tenant_id"] else "unknown")
        events.append(NormalizedOutput(event["source"], partition_key(event), encoded, origin))
    result.records_in += len(records)
    result.events.extend(events)
    result.dead_letters.extend(letters)


def partition_key(event: dict[str, Any]) -> str:
    """Which partition of the out hubs an event goes to: its subscription, or for Entra ID events
    (no subscription) its tenant and a hash of the user, so one large tenant's sign-ins spread over every
    partition (Event Hubs hashes the key; it allows 128 characters, so a user name of any length is hashed).

    The user is case-folded as the rules compare it, so one user's events stay in order on one partition.
    Rules that group by something else (an IP, a subscription) then see a key's events from several
    partitions: their Table state is keyed by the group, not the partition, so it stays exact.
    """
    if event["subscription_id"]:
        return str(event["subscription_id"])
    tenant = str(event["tenant_id"] or "unknown")
    user = event["actor"] or event["source_ip"]
    if not user or event["source"] not in IDENTITY_SOURCES:
        return tenant
    user_hash = hashlib.blake2b(str(user).casefold().encode("utf-8", "surrogatepass"), digest_size=8)
    return f"{tenant}/{user_hash.hexdigest()}"


def _reason(error: Exception) -> str:
    """A MappingError says why itself; anything else is named, as a mapper bug to fix and re-drive."""
    if isinstance(error, MappingError):
        return str(error)
    return f"cannot normalize: {type(error).__name__}: {error}"


def encode_event(event: dict[str, Any], raw: dict[str, Any] | None) -> bytes:
    """JSON bytes of an event; `raw` is dropped (and the drop noted) when the event would exceed 1 MB or
    when the record cannot be re-encoded (nested past orjson's limit, integers past 64 bits)."""
    event["raw"] = raw
    try:
        encoded = orjson.dumps(event)
        if len(encoded) <= MAX_EVENT_BYTES:
            return encoded
        omitted = f"event exceeded {MAX_EVENT_BYTES} bytes"
    except TypeError as error:
        if raw is None:
            raise MappingError(f"normalized event cannot be encoded: {error}") from error
        omitted = f"record cannot be re-encoded: {error}"
    event["raw"] = None
    event["details"] = {**(event["details"] or {}), "raw_omitted": omitted}
    try:
        encoded = orjson.dumps(event)
    except TypeError as error:
        raise MappingError(f"normalized event cannot be encoded: {error}") from error
    if len(encoded) > MAX_EVENT_BYTES:
        raise MappingError(f"normalized event exceeds {MAX_EVENT_BYTES} bytes even without raw")
    return encoded


def _record_bytes(record: Any) -> bytes:
    """A parsed record as JSON again, so its dead letter can be re-driven: orjson, or for what orjson
    refuses (nested past 254 levels, integers past 64 bits) a plain loop with no depth limit."""
    try:
        return orjson.dumps(record)
    except TypeError:
        return _json_without_limits(record)


class _Token(bytes):
    """Punctuation on `_json_without_limits`' stack, told apart from the values by its type."""


def _json_without_limits(value: Any) -> bytes:
    out = bytearray()
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if type(item) is _Token:
            out += item
        elif type(item) is dict:
            out += b"{"
            stack.append(_Token(b"}"))
            entries = list(item.items())
            for position in range(len(entries) - 1, -1, -1):
                key, member = entries[position]
                stack.append(member)
                stack.append(_Token((b"," if position else b"") + orjson.dumps(key) + b":"))
        elif type(item) is list:
            out += b"["
            stack.append(_Token(b"]"))
            for position in range(len(item) - 1, -1, -1):
                stack.append(item[position])
                if position:
                    stack.append(_Token(b","))
        elif type(item) is int:
            out += str(item).encode()
        else:
            out += orjson.dumps(item)
    return bytes(out)


def _dead_letter(reason: str, position: Position, index: int | None, original: bytes) -> DeadLetter:
    return DeadLetter(
        reason=reason[:1000], partition=position.partition, sequence_number=position.sequence_number,
        offset=position.offset, enqueued_time=position.enqueued_time, record_index=index,
        original=base64.b64encode(original).decode("ascii"),
    )


@dataclass(frozen=True)
class BatchReport:
    """What one batch did: logged as one structured line and returned to callers."""

    partition: str | None
    records_in: int
    events_out: int
    dead_letters: int
    events_by_source: dict[str, int]
    origins: dict[str, int]  # events per subscription id or `tenant:<id>`: what the silence alert watches
    dead_letters_by_reason: dict[str, int]
    duration_ms: float
    # Processing time minus the oldest enqueued time of the batch: how far behind the hub we are.
    lag_ms: float | None
    mappers: str = MAPPERS

    def as_log(self) -> str:
        return orjson.dumps({"function": "normalize", **self.__dict__}).decode()


def hubs_for(source: str, settings: Settings) -> list[str]:
    """The normalized hub plus any extra hubs the routing table names for this source."""
    return [settings.normalized_hub, *settings.routes.get(source, [])]


def publish_events(events: Sequence[NormalizedOutput], publisher: Publisher, settings: Settings) -> None:
    """Fan out: one publish per hub, each event to the normalized hub and its source's extra hubs."""
    per_hub: dict[str, list[OutgoingEvent]] = {}
    for output in events:
        for hub in hubs_for(output.source, settings):
            per_hub.setdefault(hub, []).append(OutgoingEvent(output.partition_key, output.body))
    for hub, outgoing in per_hub.items():
        publisher.publish(hub, outgoing)


def process_batch(bodies: Sequence[tuple[bytes, Position]], publisher: Publisher,
                  dead_letters: DeadLetterStore, settings: Settings,
                  catalog: StoredCatalogReader | None = None) -> BatchReport:
    """Normalize a batch, persist its dead letters, fan out its events; raise only on I/O failure.
    With `catalog`, the operation catalog the app stored is put to use first when it is due."""
    started = time.perf_counter()
    if catalog is not None:
        catalog.refresh_if_due()
    result = normalize_bodies(bodies, settings.include_raw)
    dead_letters.write(result.dead_letters)
    publish_events(result.events, publisher, settings)
    report = BatchReport(
        partition=bodies[0][1].partition if bodies else None, records_in=result.records_in,
        events_out=len(result.events), dead_letters=len(result.dead_letters),
        events_by_source=dict(result.events_by_source()), origins=dict(result.events_by_origin()),
        dead_letters_by_reason=dict(result.dead_letters_by_reason()),
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        lag_ms=batch_lag_ms(bodies),
    )
    log.log(logging.WARNING if report.dead_letters else logging.INFO, report.as_log())
    return report
