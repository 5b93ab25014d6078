"""Detection state in Table Storage: one entity per (rule, group key), ETag concurrency, housekeeping.

`StateTable.update` is the one read-modify-write of a key per batch: read (or take the entity and its
ETag from this process's cache), apply the pure transition, write with `If-Match: <ETag>` (or insert
when absent). A 412 (someone wrote since), 409 (someone inserted first) or 404 (housekeeping deleted
it) means the state we computed from is stale: re-read and re-apply. Table Storage has no atomic
increment and no TTL; this loop and the housekeeping timer make up for both.

`StateTable.update_many` does the same for all keys of a detect batch with one entity-group transaction
per PartitionKey (all or nothing: a conflict on one key writes none, that key is re-read and the
partition re-applied), and skips the read of keys it has not cached while nearly all such keys lately
were new (insert-if-absent: a wrong guess is a 409 like any other). Python CPU per Table request bounds
a detect instance, so the requests per event are what this saves (README "Scaling and cost").

Layout: PartitionKey = `<rule id>.<first hex digit of the RowKey>` (a Table partition serves about
2,000 entities/s: a hot rule spreads over 16), RowKey = a hash of the group values (Table keys forbid
`/ \\ # ?` and control characters), readable `group` kept as a property, the state as a
JSON document split over string properties of at most 16,000 characters (64 KiB in UTF-16). Rules whose
horizon is at most DAILY_HORIZON keep their keys in day tables instead (`shared.detect.day_tables`,
`StateKey.of(..., daily=True)`), so that a flood's state is dropped a day at a time.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import unquote

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.clients import table_batch
from shared.clients.storage import OwnTable, is_outage
from shared.detect.rules.aggregate import KeyState, Transition, from_us, to_us
from shared.detect.rules.rule import Rule
from shared.values import format_time, parse_time

if TYPE_CHECKING:
    from azure.data.tables import TableClient

    from shared.detect.day_tables import DayTables

log = logging.getLogger("stormwatch.detect")

# A string property holds 64 KiB of UTF-16: 16,000 characters fit even if every one needs a surrogate pair.
CHUNK_CHARS = 16_000
MAX_CHUNKS = 28
MAX_STATE_BYTES = 900_000  # UTF-16 size of the whole document: the entity limit is 1 MiB
LEARNING_ROW = "!learning"  # per-rule marker of a first_seen rule's learning start; `!` sorts first
MAX_ATTEMPTS = 25
# An entity-group transaction: at most 100 operations and 4 MiB; state text is kept well under the size.
MAX_BATCH_WRITES = 100
MAX_BATCH_CHARS = 1_000_000
READ_MANY_KEYS = 14
# Keys not cached are inserted without a read once this share of the last GUESS_NEW_WINDOW of them were new.
GUESS_NEW_WINDOW = 200
GUESS_NEW_SHARE = 0.9
# Transactions of different partitions are independent: overlap their round trips.
_WRITERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stormwatch-state")
DELETES_IN_FLIGHT = 4
# What a transaction answers when one of its writes found the entity changed (412), present (409) or gone (404).
_CONFLICT_CODES = frozenset({"UpdateConditionNotSatisfied", "EntityAlreadyExists", "ResourceNotFound"})
CACHE_ENTRIES = 10_000
# Entities of rules no longer loaded are deleted once this old.
ORPHAN_HORIZON = timedelta(days=30)
EARLIER_LAYOUT_RECHECK_SECONDS = 600
# Rules whose state can matter at most this long after its last write keep it in day tables
# (`shared.detect.day_tables`); others (first_seen, long correlations) one entity per key, deleted one by one.
DAILY_HORIZON = timedelta(hours=12)
# PartitionKeys of a day table. Fewer means more keys per transaction (Python CPU per request bounds a detect
# instance); each partition serves about 2,000 entities/s, so 8 reach about the account's 20,000/s.
DAY_PARTITIONS = 8
# A key is at most 1 KiB of UTF-16; beyond this many characters a record value is kept as prefix + hash.
MAX_KEY_CHARS = 400
# What Table keys forbid (`/ \\ # ?`, control characters), and `%` so that the escaping is reversible.
_KEY_FORBIDDEN = re.compile("[/\\\\#?%\x00-\x1f\x7f-\x9f]")
_KEY_HASH_MARK = "%h"  # never produced by the escaping (`%` is always followed by two hex digits)


def table_key(value: str) -> str:
    """A valid PartitionKey/RowKey for any text, injective: forbidden characters percent-encoded;
    a value still too long kept as its first characters plus `%h` and its SHA-256."""
    escaped = _KEY_FORBIDDEN.sub(lambda match: "".join(f"%{byte:02X}" for byte in match.group().encode()), value)
    if len(escaped) <= MAX_KEY_CHARS:
        return escaped
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{escaped[:MAX_KEY_CHARS - 66].rstrip('%0123456789ABCDEF')}{_KEY_HASH_MARK}{digest}"


def key_text(key: str) -> str:
    """The text a `table_key` stands for (for a hashed one: its readable prefix and the hash)."""
    return unquote(key)


class StateConflictError(Exception):
    """The entity changed, appeared or vanished since it was read: re-read and re-apply."""


class BatchConflictError(StateConflictError):
    """One write of a transaction found its entity changed, present or gone: nothing was written."""

    def __init__(self, index: int, sent: int = 1) -> None:
        super().__init__(f"write {index} of the transaction conflicted")
        self.index = index
        self.sent = sent  # requests the write took (the day tables may send two)


class Write(NamedTuple):
    properties: dict[str, Any]
    etag: str | None  # None: insert, the entity must not exist
    horizon: timedelta | None = None  # a key of the day tables (`shared.detect.day_tables`): its rule's horizon


class StateTooLargeError(ValueError):
    """A state document would exceed one entity (cannot happen for rules that pass load checks)."""


class Stored(NamedTuple):
    properties: dict[str, Any]
    etag: str


class EntityStore(Protocol):
    """The few Table operations state needs; each call is one Table transaction."""

    def read(self, partition_key: str, row_key: str) -> Stored | None: ...

    def read_many(self, partition_key: str, row_keys: Sequence[str]) -> tuple[dict[str, Stored], int]:
        """The entities of one partition that exist, by RowKey; and the requests that took."""

    def insert(self, properties: dict[str, Any]) -> str:
        """Create; return the new ETag. StateConflictError when it already exists."""

    def replace(self, properties: dict[str, Any], etag: str) -> str:
        """Replace if still at `etag`; return the new ETag. StateConflictError otherwise."""

    def written_before(self, rule_id: str | None, moment: datetime) -> Iterator[tuple[str, str, str]]:
        """(PartitionKey, RowKey, ETag) of a rule's key entities last written before `moment`.

        `rule_id` None: every entity of the table, rule markers included.
        """

    def written_since(self, rule_id: str, moment: datetime) -> tuple[bool, int]:
        """Whether any key entity of the rule was written at or after `moment`; and the requests that took."""

    def delete(self, partition_key: str, row_key: str, etag: str) -> bool:
        """Delete if still at `etag` (a concurrent update wins)."""

    def write_batch(self, writes: Sequence[Write]) -> list[str]:
        """Insert (no ETag) or replace-if-still-at-ETag entities of ONE PartitionKey in one transaction,
        all or nothing; their new ETags. BatchConflictError names the write that found the entity changed."""

    def delete_batch(self, partition_key: str, rows: Sequence[tuple[str, str]]) -> list[str]:
        """Delete (RowKey, ETag)s of one partition, a transaction per 100; a row written since its ETag
        is kept (a concurrent update wins). The RowKeys deleted."""


class TableEntityStore(OwnTable):
    def read_many(self, partition_key: str, row_keys: Sequence[str]) -> tuple[dict[str, Stored], int]:
        self.ensure_table()
        return query_rows(self.table, partition_key, row_keys)

    def read(self, partition_key: str, row_key: str) -> Stored | None:
        self.ensure_table()
        try:
            entity = self.table.get_entity(partition_key, row_key)
        except ResourceNotFoundError:
            return None
        return Stored(dict(entity), str(entity.metadata["etag"]))

    def insert(self, properties: dict[str, Any]) -> str:
        self.ensure_table()
        try:
            return str(self.table.create_entity(properties)["etag"])
        except ResourceExistsError as error:
            raise StateConflictError("inserted concurrently") from error

    def replace(self, properties: dict[str, Any], etag: str) -> str:
        self.ensure_table()
        try:
            metadata = self.table.update_entity(properties, mode=UpdateMode.REPLACE, etag=etag,
                                                match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as error:
            raise StateConflictError("changed or deleted concurrently") from error
        return str(metadata["etag"])

    def written_before(self, rule_id: str | None, moment: datetime) -> Iterator[tuple[str, str, str]]:
        self.ensure_table()
        query, parameters = "Timestamp lt @moment", dict[str, Any](moment=moment)
        if rule_id is not None:  # the rule's 16 partitions `<id>.0` to `<id>.f`: a range, not 16 queries
            query = f"PartitionKey gt @low and PartitionKey lt @high and {query}"
            parameters.update(low=f"{rule_id}.", high=f"{rule_id}/")
        for entity in self.table.query_entities(query, parameters=parameters, select=["PartitionKey", "RowKey"]):
            yield entity["PartitionKey"], entity["RowKey"], str(entity.metadata["etag"])

    def written_since(self, rule_id: str, moment: datetime) -> tuple[bool, int]:
        self.ensure_table()
        pages = self.table.query_entities(
            "PartitionKey gt @low and PartitionKey lt @high and Timestamp ge @moment", select=["RowKey"],
            parameters={"low": f"{rule_id}.", "high": f"{rule_id}/", "moment": moment}, results_per_page=1).by_page()
        sent = 0
        for page in pages:  # the service may answer a page empty, with a continuation, at each partition
            sent += 1
            if next(iter(page), None) is not None:
                return True, sent
        return False, sent

    def delete(self, partition_key: str, row_key: str, etag: str) -> bool:
        try:
            self.table.delete_entity(partition_key, row_key, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def write_batch(self, writes: Sequence[Write]) -> list[str]:
        if len(writes) == 1:  # one operation costs less as a plain request
            properties, etag, _ = writes[0]
            try:
                return [self.insert(properties) if etag is None else self.replace(properties, etag)]
            except StateConflictError as error:
                raise BatchConflictError(0) from error
        self.ensure_table()
        operations = [table_batch.Operation("insert" if etag is None else "replace", properties["PartitionKey"],
                                            properties["RowKey"], _text_properties(properties), etag)
                      for properties, etag, _ in writes]
        try:
            return [str(etag) for etag in table_batch.submit(self.table, operations)]
        except table_batch.TransactionError as error:
            if error.error_code in _CONFLICT_CODES:
                raise BatchConflictError(error.index) from error
            raise

    def delete_batch(self, partition_key: str, rows: Sequence[tuple[str, str]]) -> list[str]:
        deleted: list[str] = []
        for first in range(0, len(rows), MAX_BATCH_WRITES):
            pending = list(rows[first:first + MAX_BATCH_WRITES])
            while len(pending) > 1:
                try:
                    table_batch.submit(self.table, [table_batch.Operation("delete", partition_key, row, etag=etag)
                                                    for row, etag in pending])
                except table_batch.TransactionError as error:
                    if error.error_code not in _CONFLICT_CODES:
                        raise
                    del pending[error.index]  # written since it was listed (or gone): keep it, delete the rest
                    continue
                deleted.extend(row for row, _ in pending)
                pending = []
            deleted.extend(row for row, etag in pending if self.delete(partition_key, row, etag))
        return deleted


def query_rows(table: TableClient, partition_key: str, row_keys: Sequence[str]) -> tuple[dict[str, Stored], int]:
    """Entities of one partition by RowKey, READ_MANY_KEYS to a query (a filter holds at most 15
    comparisons): a fresh instance reads its first batch's keys in a few requests, not one each."""
    found: dict[str, Stored] = {}
    sent = 0
    for first in range(0, len(row_keys), READ_MANY_KEYS):
        names = {f"k{n}": row for n, row in enumerate(row_keys[first:first + READ_MANY_KEYS])}
        # The SDK finds parameters between spaces: `( ... @k1 )`, not `(... @k1)`.
        query = f"PartitionKey eq @partition and ( {' or '.join(f'RowKey eq @{name}' for name in names)} )"
        for page in table.query_entities(query, parameters={"partition": partition_key, **names}).by_page():
            sent += 1
            for entity in page:
                found[entity["RowKey"]] = Stored(dict(entity), str(entity.metadata["etag"]))
    return found, sent


def _text_properties(properties: dict[str, Any]) -> dict[str, str]:
    """A state row's properties, all strings (what `shared.clients.table_batch` writes)."""
    text = {name: value for name, value in properties.items()
            if name not in ("PartitionKey", "RowKey") and isinstance(value, str)}
    if len(text) != len(properties) - 2:
        raise TypeError("a state row holds only strings")
    return text


class MemoryEntityStore:
    """The same contract in process, for `rules test` without a storage account."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._entities: dict[tuple[str, str], tuple[dict[str, Any], int, datetime]] = {}
        self._version = 0
        self._lock = threading.RLock()

    def read(self, partition_key: str, row_key: str) -> Stored | None:
        with self._lock:
            found = self._entities.get((partition_key, row_key))
        return None if found is None else Stored(dict(found[0]), str(found[1]))

    def read_many(self, partition_key: str, row_keys: Sequence[str]) -> tuple[dict[str, Stored], int]:
        found = {row: self.read(partition_key, row) for row in row_keys}
        return {row: stored for row, stored in found.items() if stored is not None}, 1

    def _put(self, properties: dict[str, Any], expected: str | None) -> str:
        key = (properties["PartitionKey"], properties["RowKey"])
        with self._lock:  # re-entrant: write_batch holds it
            current = self._entities.get(key)
            if (current is None) != (expected is None) or (current and str(current[1]) != expected):
                raise StateConflictError("changed concurrently")
            self._version += 1
            self._entities[key] = (dict(properties), self._version, self._clock())
            return str(self._version)

    def insert(self, properties: dict[str, Any]) -> str:
        return self._put(properties, None)

    def replace(self, properties: dict[str, Any], etag: str) -> str:
        return self._put(properties, etag)

    def written_before(self, rule_id: str | None, moment: datetime) -> Iterator[tuple[str, str, str]]:
        with self._lock:
            found = [(pk, rk, str(version)) for (pk, rk), (_, version, written) in self._entities.items()
                     if written < moment and (rule_id is None or pk.startswith(f"{rule_id}."))]
        yield from found

    def written_since(self, rule_id: str, moment: datetime) -> tuple[bool, int]:
        with self._lock:
            return any(written >= moment and pk.startswith(f"{rule_id}.")
                       for (pk, _), (_, _, written) in self._entities.items()), 1

    def delete(self, partition_key: str, row_key: str, etag: str) -> bool:
        with self._lock:
            current = self._entities.get((partition_key, row_key))
            if current is None or str(current[1]) != etag:
                return False
            del self._entities[(partition_key, row_key)]
            return True

    def write_batch(self, writes: Sequence[Write]) -> list[str]:
        with self._lock:  # all or nothing, as a transaction
            for index, (properties, etag, _) in enumerate(writes):
                current = self._entities.get((properties["PartitionKey"], properties["RowKey"]))
                if (current is None) != (etag is None) or (current and str(current[1]) != etag):
                    raise BatchConflictError(index)
            return [self._put(properties, etag) for properties, etag, _ in writes]

    def delete_batch(self, partition_key: str, rows: Sequence[tuple[str, str]]) -> list[str]:
        return [row for row, etag in rows if self.delete(partition_key, row, etag)]


class StateKey(NamedTuple):
    partition_key: str
    row_key: str

    @classmethod
    def of(cls, rule_id: str, group_hash: str, *, daily: bool = False) -> StateKey:
        """The state table: `<rule id>.<first hex digit>`, the group hash. A day table holds every
        short-lived rule's keys together, so that one transaction writes a batch's keys of a partition
        whichever rule they belong to: `<0 to DAY_PARTITIONS - 1>`, `<rule id>.<group hash>`."""
        if daily:
            return cls(str(int(group_hash[0], 16) * DAY_PARTITIONS // 16), f"{rule_id}.{group_hash}")
        return cls(f"{rule_id}.{group_hash[0]}", group_hash)

    @property
    def rule_id(self) -> str:
        if "." in self.partition_key or "." not in self.row_key:
            return self.partition_key.split(".", 1)[0]
        return self.row_key.split(".", 1)[0]

    @property
    def group_hash(self) -> str:
        """The hash of the group values (the part of alert ids that names the key)."""
        return self.row_key if "." in self.partition_key else self.row_key.rsplit(".", 1)[-1]


class Change(NamedTuple):
    """One key's update of a batch: its entity, the readable properties beside the state, the transition."""

    key: StateKey
    describe: dict[str, Any]
    change: Callable[[KeyState | None], Transition]
    horizon: timedelta | None = None  # set: a key of the day tables, its rule's horizon


def _transactions(writes: list[tuple[int, Write, KeyState]]) -> Iterator[list[tuple[int, Write, KeyState]]]:
    """Writes of one partition cut into transactions of at most 100 operations and MAX_BATCH_CHARS of state."""
    chunk: list[tuple[int, Write, KeyState]] = []
    chars = 0
    for item in writes:
        size = sum(len(value) for name, value in item[1].properties.items() if name.startswith("state"))
        if chunk and (len(chunk) == MAX_BATCH_WRITES or chars + size > MAX_BATCH_CHARS):
            yield chunk
            chunk, chars = [], 0
        chunk.append(item)
        chars += size
    if chunk:
        yield chunk


@dataclass
class Applied:
    """A transition as written, with what it cost (for the batch report and the benchmark)."""

    transition: Transition
    reads: int = 0
    writes: int = 0
    conflicts: int = 0
    failed: bool = False


class Housekept(NamedTuple):
    deleted: dict[str, int]  # entities deleted one by one, per rule
    dropped: list[str]  # day tables dropped whole


@dataclass
class StateTable:
    """Read-modify-write of detection state with a per-process cache of entities and their ETags.

    The cache saves the read when this process wrote the entity last (the usual case: one instance
    owns a partition); a stale cached ETag costs one 412 and a re-read, never a wrong count.
    """

    store: EntityStore
    cache_entries: int = CACHE_ENTRIES
    # How a stored document is read back: a KeyState subclass (inventory aggregates) brings its own.
    decode: Callable[[str], KeyState] = KeyState.from_json
    _cache: OrderedDict[StateKey, tuple[KeyState, str]] = field(default_factory=OrderedDict)
    _learning: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Whether each of the last keys not cached turned out new (absent from the table).
    _recent_new: deque[bool] = field(default_factory=lambda: deque(maxlen=GUESS_NEW_WINDOW))
    # Where short-lived rules keep their keys; None: in `store` like the others (`rules test`, in memory).
    days: DayTables | None = None
    # Per rule kept in day tables: whether the state table holds keys of it that releases before 0.3
    # wrote there within its horizon, and when that was last checked (time.monotonic()).
    _earlier_layout: dict[str, tuple[bool, float]] = field(default_factory=dict)
    _checking: threading.Lock = field(default_factory=threading.Lock)

    def daily_horizon(self, rule: Rule) -> timedelta | None:
        """The rule's horizon when its keys live in the day tables, else None. first_seen rules stay in the
        state table whatever their `forget`: their learning marker lives there, beside their keys."""
        if self.days is None or rule.kind == "first_seen" or rule.horizon > DAILY_HORIZON:
            return None
        return rule.horizon

    def key_of(self, rule: Rule, group_hash: str) -> StateKey:
        return StateKey.of(rule.id, group_hash, daily=self.daily_horizon(rule) is not None)

    def _read(self, key: StateKey, horizon: timedelta | None) -> tuple[tuple[KeyState | None, str | None] | None, int]:
        """A key's state and ETag, None when absent (the state None: absent, the ETag says where to write;
        the ETag None: found where an earlier release kept it, to be inserted in today's table); and the
        requests that took."""
        if horizon is None or self.days is None:
            stored, sent = self.store.read(*key), 1
        else:
            stored, sent = self.days.read(key, horizon)
        return self._resolved(key, horizon, stored, sent)

    def _fetched(self, changes: Sequence[Change]) -> list[tuple[Stored | None, int]]:
        """What `_read` fetches, for many keys of one partition in a few queries (requests on the first)."""
        keys = [change.key for change in changes]
        if changes[0].horizon is None or self.days is None:
            found, sent = self.store.read_many(keys[0].partition_key, [key.row_key for key in keys])
            stored = [found.get(key.row_key) for key in keys]
        else:
            stored, sent = self.days.read_many(keys, [change.horizon or DAILY_HORIZON for change in changes])
        return [(entity, sent if index == 0 else 0) for index, entity in enumerate(stored)]

    def _resolved(self, key: StateKey, horizon: timedelta | None, stored: Stored | None,
                  sent: int) -> tuple[tuple[KeyState | None, str | None] | None, int]:
        """`_read`'s answer from what was fetched: an earlier release's copy of a key absent (or only fenced)
        in the day tables, the state decoded."""
        if horizon is not None and self.days is not None and (stored is None or "state" not in stored.properties):
            alive, checked = self._earlier_layout_alive(key, horizon)  # absent, or only fenced
            sent += checked
            if alive:
                earlier, sent = self.store.read(*StateKey.of(key.rule_id, key.group_hash)), sent + 1
                if earlier is not None:
                    return (decode_state(earlier.properties, self.decode),
                            None if stored is None else stored.etag), sent
        if stored is None:
            return None, sent
        state = decode_state(stored.properties, self.decode) if "state" in stored.properties else None
        return (state, stored.etag), sent

    def _maybe_earlier(self, change: Change) -> tuple[bool, int]:
        """Whether a key must not be guessed new (it may live where an earlier release kept it); and the
        requests the check took."""
        if change.horizon is None or self.days is None:
            return False, 0
        return self._earlier_layout_alive(change.key, change.horizon)

    def _earlier_layout_alive(self, key: StateKey, horizon: timedelta) -> tuple[bool, int]:
        """Whether a key of a short-lived rule may still live where releases before 0.3 kept it (one entity
        per key in the state table, written within the rule's horizon), and the requests the check took.
        Checked per rule every few minutes while some were found, so windows in flight survive the upgrade;
        once none are, never again in this process (no release that writes them runs any more)."""
        rule_id = key.rule_id
        with self._checking:  # the partitions of a batch wait for one check, not each make their own
            known = self._earlier_layout.get(rule_id)
            if known is not None and (not known[0] or time.monotonic() - known[1] <= EARLIER_LAYOUT_RECHECK_SECONDS):
                return known[0], 0
            alive, sent = self.store.written_since(rule_id, datetime.now(UTC) - horizon)
            self._earlier_layout[rule_id] = alive, time.monotonic()
            return alive, sent

    def _write_batch(self, writes: Sequence[Write]) -> tuple[list[str], int]:
        """The new ETags, and the requests the writes took."""
        if writes[0].horizon is None or self.days is None:
            return self.store.write_batch(writes), 1
        return self.days.write_batch(writes)

    def stored_state(self, key: StateKey, horizon: timedelta | None = None) -> KeyState | None:
        """A key's state as stored now, bypassing the cache (tests, the soak)."""
        found, _ = self._read(key, horizon)
        return None if found is None else found[0]

    def update(self, key: StateKey, describe: dict[str, Any], change: Callable[[KeyState | None], Transition],
               horizon: timedelta | None = None) -> Applied:
        applied = Applied(Transition(state=None))
        cached: tuple[KeyState | None, str | None] | None = self._cached(key)
        for attempt in range(MAX_ATTEMPTS):
            if cached is None:
                cached, sent = self._read(key, horizon)
                applied.reads += sent
            before, etag = cached if cached is not None else (None, None)
            applied.transition = change(before)
            after = applied.transition.state
            if after is None:
                return applied
            properties = {"PartitionKey": key.partition_key, "RowKey": key.row_key, **describe, **encode_state(after)}
            try:
                applied.writes += 1
                etags, sent = self._write_batch([Write(properties, etag, horizon)])
                new_etag = etags[0]
                applied.writes += sent - 1
            except BatchConflictError as conflict:
                applied.writes += conflict.sent - 1
                applied.conflicts += 1
                self._forget(key)
                cached = None
                time.sleep(random.uniform(0, 0.002 * attempt))  # noqa: S311 - jitter, not security
                continue
            self._remember(key, after, new_etag)
            return applied
        raise StateConflictError(f"{key} still contended after {MAX_ATTEMPTS} attempts")

    def update_many(self, changes: Sequence[Change]) -> list[Applied | Exception]:
        """`update` for many keys at once: per PartitionKey one read per key not cached and one
        entity-group transaction for all writes (a key not cached is first guessed new: insert-if-absent).

        A transaction is all or nothing, so a conflict on one write (409/412/404) writes nothing: that
        key is re-read, and every key of the partition re-applied and written again. A key whose write
        storage refuses for what it holds (a 4xx) is retried alone; its error is its outcome, the other
        keys are written. Outages and endless contention raise. Requests are counted on the first key of
        each transaction, so the sum over keys is what was sent.
        """
        groups: dict[str, list[int]] = {}
        for index, change in enumerate(changes):
            groups.setdefault(change.key.partition_key, []).append(index)
        outcomes: list[Applied | Exception] = [Applied(Transition(state=None)) for _ in changes]

        def run(indices: list[int]) -> None:
            for index, outcome in zip(indices, self._update_partition([changes[i] for i in indices]), strict=True):
                outcomes[index] = outcome

        if len(groups) <= 1:
            for indices in groups.values():
                run(indices)
        else:
            list(_WRITERS.map(run, groups.values()))
        return outcomes

    def _update_partition(self, changes: list[Change]) -> list[Applied | Exception]:
        applied = [Applied(Transition(state=None)) for _ in changes]
        outcomes: dict[int, Applied | Exception] = {}
        known: dict[int, tuple[KeyState | None, str | None] | None] = {index: self._cached(change.key)
                                                                for index, change in enumerate(changes)}
        guessing = self._guessing_new()
        to_read: set[int] = set()
        for index, cached in known.items():
            if cached is None and guessing:  # a guess unless an earlier release may have kept the key
                earlier, checked = self._maybe_earlier(changes[index])
                applied[index].reads += checked
                if earlier:
                    to_read.add(index)
            elif cached is None:
                to_read.add(index)
        wrong_guesses = 0
        for attempt in range(MAX_ATTEMPTS):
            writes: list[tuple[int, Write, KeyState]] = []
            fetched = self._prefetched(changes, sorted(index for index in to_read if index not in outcomes))
            for index, change in enumerate(changes):
                if index in outcomes:
                    continue
                try:
                    if index in to_read:
                        if index in fetched:
                            known[index], sent = self._resolved(change.key, change.horizon, *fetched[index])
                        else:
                            known[index], sent = self._read(change.key, change.horizon)
                        applied[index].reads += sent
                        if not guessing:
                            self._observe_new(known[index] is None)
                        to_read.discard(index)
                    before, etag = known[index] or (None, None)
                    applied[index].transition = change.change(before)
                    after = applied[index].transition.state
                    if after is None:
                        outcomes[index] = applied[index]
                        continue
                    properties = {"PartitionKey": change.key.partition_key, "RowKey": change.key.row_key,
                                  **change.describe, **encode_state(after)}
                except Exception as error:  # a bug, an unreadable stored row or an oversized state: this key's
                    if is_outage(error):  # outcome, not the batch's; only an outage of the read raises
                        raise
                    outcomes[index] = error
                    continue
                writes.append((index, Write(properties, etag, change.horizon), after))
            if not writes:
                break
            for chunk in _transactions(writes):
                applied[chunk[0][0]].writes += 1
                try:
                    etags, sent = self._write_batch([write for _, write, _ in chunk])
                    applied[chunk[0][0]].writes += sent - 1
                except BatchConflictError as conflict:
                    applied[chunk[0][0]].writes += conflict.sent - 1
                    failed, write, _ = chunk[conflict.index]
                    applied[failed].conflicts += 1
                    self._forget(changes[failed].key)
                    known[failed] = None
                    to_read.add(failed)
                    if guessing and write.etag is None:
                        self._observe_new(False)
                        wrong_guesses += 1
                        if wrong_guesses > 1:  # not a flood here after all: read the other guesses too
                            to_read.update(index for index, write, _ in chunk if write.etag is None)
                    time.sleep(random.uniform(0, 0.002 * attempt))  # noqa: S311 - jitter, not security
                    break
                except Exception as error:
                    if is_outage(error):
                        raise
                    for index, _, _ in chunk:  # refused for what it holds: find which key, one by one
                        change = changes[index]
                        try:
                            outcomes[index] = self.update(change.key, change.describe, change.change, change.horizon)
                        except Exception as alone:
                            if isinstance(alone, StateConflictError) or is_outage(alone):
                                raise
                            outcomes[index] = alone
                    continue
                for (index, write, after), etag in zip(chunk, etags, strict=True):
                    self._remember(changes[index].key, after, etag)
                    outcomes[index] = applied[index]
                    if guessing and write.etag is None:
                        self._observe_new(True)
            if len(outcomes) == len(changes):
                break
        else:
            raise StateConflictError(f"partition {changes[0].key.partition_key} still contended "
                                     f"after {MAX_ATTEMPTS} attempts")
        return [outcomes[index] for index in range(len(changes))]

    def _prefetched(self, changes: Sequence[Change], reading: list[int]) -> dict[int, tuple[Stored | None, int]]:
        """The keys to read, fetched together; a query storage refuses for what it asks leaves them to be
        read one by one (only an outage raises)."""
        if len(reading) < 2:
            return {}
        try:
            return dict(zip(reading, self._fetched([changes[index] for index in reading]), strict=True))
        except Exception as error:
            if is_outage(error):
                raise
            log.warning("state keys of partition %s read one by one: %s", changes[reading[0]].key.partition_key,
                        type(error).__name__)
            return {}

    def _guessing_new(self) -> bool:
        """Skip the read of keys not cached when nearly all such keys lately were new (a flood of new IPs
        and users): an insert that finds the key is a conflict like any other, so a wrong guess costs one
        more request, never a count. A fresh process (a partition taken over) reads first."""
        recent = self._recent_new
        return len(recent) == recent.maxlen and sum(recent) >= GUESS_NEW_SHARE * len(recent)

    def _observe_new(self, new: bool) -> None:
        with self._lock:
            self._recent_new.append(new)

    def learning_start(self, rule_id: str, candidate_us: int) -> int:
        """When a first_seen rule saw its first event: written once (insert wins), then cached."""
        known = self._learning.get(rule_id)
        if known is not None:
            return known
        for _ in range(MAX_ATTEMPTS):
            stored = self.store.read(rule_id, LEARNING_ROW)
            if stored is not None:
                started = to_us(parse_time(stored.properties["started"]))
                break
            try:
                self.store.insert({"PartitionKey": rule_id, "RowKey": LEARNING_ROW,
                                   "started": format_time(from_us(candidate_us))})
            except StateConflictError:
                continue
            started = candidate_us
            break
        else:
            raise StateConflictError(f"learning marker of {rule_id} still contended")
        self._learning[rule_id] = started
        return started

    def housekeep(self, rules: list[Rule], now: datetime) -> Housekept:
        """Drop the day tables nothing reads any more; delete entities of the state table not written within
        their rule's horizon, and orphans of removed rules (or of rules now kept in day tables) after 30 days.

        Deletes go 100 to a transaction per partition (the listing comes partition by partition). Rules that
        keep no state are not listed (one query each, most of a large pack); rows left by one that kept
        state before it was edited go with the orphans."""
        dropped = [] if self.days is None else self.days.expired(now)
        if self.days is not None and dropped:
            self.days.drop(dropped)
        deleted: dict[str, int] = {}
        stateful = [rule for rule in rules if rule.stateful and self.daily_horizon(rule) is None]
        for rule in stateful:
            for key in self._delete(self.store.written_before(rule.id, now - rule.horizon)):
                deleted[rule.id] = deleted.get(rule.id, 0) + 1
                self._forget(key)
        known = {rule.id for rule in stateful}
        orphans = (row for row in self.store.written_before(None, now - ORPHAN_HORIZON)
                   if StateKey(row[0], row[1]).rule_id not in known)
        for key in self._delete(orphans):
            deleted[key.rule_id] = deleted.get(key.rule_id, 0) + 1
        return Housekept(deleted, dropped)

    def clear(self, now: datetime) -> int:
        """Delete every entity and day table (`replay --fresh`, the demo): start from empty state."""
        removed = len(list(self._delete(list(self.store.written_before(None, now + timedelta(days=1))))))
        if self.days is not None:
            names = [name for name, _ in self.days.tables()]
            removed += self.days.count(names)
            self.days.drop(names)
        with self._lock:
            self._cache.clear()
        self._learning.clear()
        return removed

    def _delete(self, rows: Iterable[tuple[str, str, str]]) -> Iterator[StateKey]:
        """Delete listed (PartitionKey, RowKey, ETag)s in transactions of one partition's run of rows,
        several in flight while the listing goes on."""
        in_flight: deque[Future[tuple[str, list[str]]]] = deque()

        def send(partition_key: str, batch: list[tuple[str, str]]) -> tuple[str, list[str]]:
            return partition_key, self.store.delete_batch(partition_key, batch)

        def done(future: Future[tuple[str, list[str]]]) -> Iterator[StateKey]:
            partition_key, deleted = future.result()
            return (StateKey(partition_key, row) for row in deleted)

        for partition_key, run in itertools.groupby(rows, key=lambda row: row[0]):
            listed = ((row_key, etag) for _, row_key, etag in run)
            while batch := list(itertools.islice(listed, MAX_BATCH_WRITES)):
                in_flight.append(_WRITERS.submit(send, partition_key, batch))
                if len(in_flight) == DELETES_IN_FLIGHT:
                    yield from done(in_flight.popleft())
        while in_flight:
            yield from done(in_flight.popleft())

    def _cached(self, key: StateKey) -> tuple[KeyState, str] | None:
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
            return found

    def _remember(self, key: StateKey, state: KeyState, etag: str) -> None:
        with self._lock:
            self._cache[key] = (state, etag)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)

    def _forget(self, key: StateKey) -> None:
        with self._lock:
            self._cache.pop(key, None)


def encode_state(state: KeyState) -> dict[str, str]:
    text = state.to_json()
    chunks = [text[index:index + CHUNK_CHARS] for index in range(0, len(text), CHUNK_CHARS)] or [""]
    if len(chunks) > MAX_CHUNKS or (len(text) * 2 > MAX_STATE_BYTES
                                    and len(text.encode("utf-16-le")) > MAX_STATE_BYTES):
        raise StateTooLargeError(f"state of {len(text)} characters exceeds one entity")
    return {"state" if index == 0 else f"state{index}": chunk for index, chunk in enumerate(chunks)}


def decode_state(properties: dict[str, Any], decode: Callable[[str], KeyState] = KeyState.from_json) -> KeyState:
    parts = [properties.get("state", "")]
    index = 1
    while f"state{index}" in properties:
        parts.append(properties[f"state{index}"])
        index += 1
    return decode("".join(parts))


def describe_key(rule: Rule, group: dict[str, str | None]) -> dict[str, Any]:
    """The readable properties beside the state: which rule, which group (values cut to 256 chars)."""
    shown = {name: None if value is None else value[:256] for name, value in group.items()}
    return {"rule": rule.id, "kind": rule.kind, "group": orjson.dumps(shown).decode()}
