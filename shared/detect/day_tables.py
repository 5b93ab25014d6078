"""Short-lived detection state in one table per UTC day, so that expired state goes a whole day at a time.

Housekeeping that deletes entity by entity cannot outrun a flood of new keys (every failed sign-in from a
new IP for a new user makes new state), and Table Storage has no TTL. Keys of rules whose horizon is at
most `DAILY_HORIZON` therefore live in `<state table><YYYYMMDD>`: a key is written in the table of its
partition's current day ("today"; each partition turns its day at its own hour, `TURN_STEP` apart), and a
day's table is dropped in one request once nothing in it can matter (`expired`).

A key last written yesterday moves on its first write today; a key not yet written today may still live
in yesterday's table while its rule's horizon (plus `CLOCK_SKEW`) has not passed since its partition's
turn, so only then is yesterday read (`read`). Moving keeps the state exact under concurrency and crashes:

- the entity left behind becomes a tombstone (`moved`) holding the state written today, replaced with
  `If-Match` of the ETag read: a writer still on yesterday's copy (a clock behind) gets 412, re-reads,
  finds the tombstone and follows it to today;
- a key new today gets an empty tombstone in yesterday's table first (an insert: 409 if the key is there),
  so that no writer can still create it there;
- the tombstone is written before today's entity: a crash between the two leaves a tombstone whose state
  is found when today's entity is missing, and the redelivered batch's watermarks skip what it holds.

ETags handed to `StateTable` carry the day they belong to (`YYYYMMDD:<etag>`, `YYYYMMDD:-` for a key
whose tombstone in that day says it belongs to the next one): it never looks inside them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceNotFoundError

from shared.detect.state import (
    DAILY_HORIZON,
    DAY_PARTITIONS,
    BatchConflictError,
    StateKey,
    StateTable,
    Stored,
    TableEntityStore,
    Write,
    query_rows,
)
from shared.settings import SettingsError, env_name

if TYPE_CHECKING:
    from azure.data.tables import TableClient, TableServiceClient

DAY = timedelta(days=1)
# Each partition of a day table turns its day this much after the one before: at any moment only the
# partitions that turned within a rule's horizon read and fence yesterday's table, so a flood costs about
# the same whatever the hour (all turning at midnight would double its cost for hours).
TURN_STEP = DAY / DAY_PARTITIONS
LAST_TURN = (DAY_PARTITIONS - 1) * TURN_STEP
# How far apart the clocks of two detect instances may be around a turn.
CLOCK_SKEW = timedelta(minutes=5)
MOVED = "moved"  # the property that makes an entity a tombstone
_FOLLOW = "-"  # ETag part of a key whose tombstone says it lives in the next day
_SUFFIX = len("YYYYMMDD")


def state_table(service: TableServiceClient, name: str) -> StateTable:
    """Detection state as detect keeps it: the state table and its day tables."""
    return StateTable(TableEntityStore(service.get_table_client(name)), days=DayTables(service, name))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _turn(partition_key: str) -> timedelta:
    """How long after midnight UTC this partition's day begins."""
    index = int(partition_key) if partition_key.isdigit() else 0
    return TURN_STEP * min(index, DAY_PARTITIONS - 1)


def day_of(partition_key: str, now: datetime) -> date:
    """The day table a partition's keys are written in now."""
    return (now - _turn(partition_key)).date()


def _probing(partition_key: str, now: datetime, horizon: timedelta) -> bool:
    """Whether a key not written in today's table may still live, alive, in yesterday's."""
    return now < _midnight(day_of(partition_key, now)) + _turn(partition_key) + horizon + CLOCK_SKEW


def utc_now() -> datetime:
    """The clock of DayTables built without one (looked up at each call, so a test can pin it)."""
    return datetime.now(UTC)


class DayTables:
    """The day tables of one state table: read, write (moving keys into today's table), drop."""

    def __init__(self, service: TableServiceClient, base: str, clock: Callable[[], datetime] | None = None,
                 store: Callable[[TableClient], TableEntityStore] = TableEntityStore) -> None:
        if len(base) + _SUFFIX > 63:
            raise SettingsError(f"{env_name('state_table')}: {base!r} leaves no room for a day's date "
                                f"(at most {63 - _SUFFIX} characters)")
        self.service, self.base, self.clock, self._store = service, base, clock, store
        self._tables: dict[date, TableEntityStore] = {}
        # Fences and tombstones (with the ETag they replaced) written by a call whose second step then
        # conflicted: not sent again when it is retried.
        self._fenced: set[tuple[date, str, str]] = set()
        self._moved: set[tuple[date, str, str, str]] = set()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self.clock() if self.clock is not None else utc_now()

    def name(self, day: date) -> str:
        return f"{self.base}{day:%Y%m%d}"

    def _table(self, day: date) -> TableEntityStore:
        with self._lock:
            found = self._tables.get(day)
            if found is None:
                found = self._tables[day] = self._store(self.service.get_table_client(self.name(day)))
                for old in sorted(self._tables)[:-4]:  # yesterday, today, tomorrow (a clock behind) suffice
                    del self._tables[old]
            return found

    def read(self, key: StateKey, horizon: timedelta) -> tuple[Stored | None, int]:
        """A key's state and where it is (properties without `state` for a key known absent but fenced),
        and the requests that took."""
        found, sent = self.read_many([key], [horizon])
        return found[0], sent

    def read_many(self, keys: Sequence[StateKey], horizons: Sequence[timedelta]) -> tuple[list[Stored | None], int]:
        """`read` for keys of one partition: a query per few keys in today's table; for those a writer whose
        clock is past the turn moved on, in tomorrow's; for those absent that may still live in yesterday's
        table, there. And the requests that took."""
        now = self.now()
        partition_key = keys[0].partition_key
        today = day_of(partition_key, now)
        found, sent = self._get_many(today, partition_key, [key.row_key for key in keys])
        answers: dict[StateKey, Stored | None] = {}
        moved_on: list[StateKey] = []
        earlier: list[StateKey] = []
        for key, horizon in zip(keys, horizons, strict=True):
            stored = found.get(key.row_key)
            if stored is not None and MOVED not in stored.properties:
                answers[key] = _located(today, stored)
            elif stored is not None:
                moved_on.append(key)
            elif _probing(partition_key, now, horizon):
                earlier.append(key)
            else:
                answers[key] = None
        if moved_on:
            later, more = self._get_many(today + DAY, partition_key, [key.row_key for key in moved_on])
            sent += more
            for key in moved_on:
                stored = later.get(key.row_key)
                answers[key] = _located(today + DAY, stored) if stored is not None else _followed(
                    today, found[key.row_key])
        if earlier:
            before, more = self._get_many(today - DAY, partition_key, [key.row_key for key in earlier])
            sent += more
            for key in earlier:
                stored = before.get(key.row_key)
                answers[key] = None if stored is None else (
                    _followed(today - DAY, stored) if MOVED in stored.properties else _located(today - DAY, stored))
        return [answers[key] for key in keys], sent

    def _get_many(self, day: date, partition_key: str, rows: Sequence[str]) -> tuple[dict[str, Stored], int]:
        """Entities of one partition of that day's table by RowKey; none when the table is missing."""
        try:
            return query_rows(self._table(day).table, partition_key, rows)
        except ResourceNotFoundError:
            return {}, 1

    def write_batch(self, writes: Sequence[Write]) -> tuple[list[str], int]:
        """Write the keys of one PartitionKey: tombstones in yesterday's table first (one transaction), then
        today's entities (one transaction); their new ETags and the requests sent. BatchConflictError names
        the write whose entity had changed, and the requests sent."""
        if not writes:
            return [], 0
        now = self.now()
        partition_key = writes[0].properties["PartitionKey"]
        today = day_of(partition_key, now)
        first: dict[date, list[tuple[int, Write]]] = {}
        then: dict[date, list[tuple[int, Write]]] = {}
        for index, write in enumerate(writes):
            day, etag = _location(write.etag)
            row = write.properties["RowKey"]
            # Only within the horizon of the turn can yesterday's copy still matter, or a writer whose clock
            # lags still write there: past it, yesterday's table may even be gone (`expired`).
            probing = write.horizon is not None and _probing(partition_key, now, write.horizon)
            if day is not None and etag == _FOLLOW:  # yesterday's tombstone is in place
                then.setdefault(day + DAY, []).append((index, write._replace(etag=None)))
            elif day is not None and day >= today:
                then.setdefault(day, []).append((index, write._replace(etag=etag)))
            elif day == today - DAY and probing and (day, partition_key, row, etag) not in self._moved:
                # alive yesterday: leave a tombstone holding today's state, then move
                first.setdefault(day, []).append((index, Write({**write.properties, MOVED: "1"}, etag)))
                then.setdefault(today, []).append((index, write._replace(etag=None)))
            else:  # new; or yesterday's copy expired, or already a tombstone: fence yesterday if it may matter
                if probing and day != today - DAY and (today - DAY, partition_key, row) not in self._fenced:
                    fence = {"PartitionKey": partition_key, "RowKey": row, MOVED: "1"}
                    first.setdefault(today - DAY, []).append((index, Write(fence, None)))
                then.setdefault(today, []).append((index, write._replace(etag=None)))
        sent = 0
        for day, step in sorted(first.items()):
            sent += 1
            self._submit(day, step, sent)
        etags: dict[int, str] = {}
        try:
            for day, step in sorted(then.items()):
                sent += 1
                for (index, _), etag in zip(step, self._submit(day, step, sent), strict=True):
                    etags[index] = f"{day:%Y%m%d}:{etag}"
        except BatchConflictError:  # the fences and tombstones stand: a retry must not send them again
            with self._lock:  # (each would conflict on its own: one more round per key)
                for day, step in first.items():
                    for _, write in step:
                        row = write.properties["RowKey"]
                        if write.etag is None:
                            self._fenced.add((day, partition_key, row))
                        else:
                            self._moved.add((day, partition_key, row, write.etag))
            raise
        if self._fenced or self._moved:  # forget what was written now, and what a later turn made moot
            rows = {write.properties["RowKey"] for write in writes}
            with self._lock:
                self._fenced = {entry for entry in self._fenced if entry[1] != partition_key
                                or (entry[2] not in rows and entry[0] >= today - DAY)}
                self._moved = {entry for entry in self._moved if entry[1] != partition_key
                               or (entry[2] not in rows and entry[0] >= today - DAY)}
        return [etags[index] for index in range(len(writes))], sent

    def _submit(self, day: date, step: list[tuple[int, Write]], sent: int) -> list[str]:
        """One transaction in that day's table; a conflict names the write of the call and the requests
        the call has sent so far (`sent`, this one included)."""
        try:
            return self._table(day).write_batch([write for _, write in step])
        except BatchConflictError as conflict:
            raise BatchConflictError(step[conflict.index][0], sent) from conflict

    def tables(self) -> list[tuple[str, date]]:
        """The day tables there are, with their days."""
        low, high = self.base + "0" * _SUFFIX, self.base + "9" * _SUFFIX
        found = []
        for table in self.service.query_tables("TableName ge @low and TableName le @high",
                                               parameters={"low": low, "high": high}):
            suffix = table.name[len(self.base):]
            day = _day(suffix) if len(suffix) == _SUFFIX and suffix.isdigit() else None
            if day is not None:
                found.append((table.name, day))
        return found

    def expired(self, now: datetime) -> list[str]:
        """Day tables nothing reads or writes any more: written until the last partition's turn (plus skew),
        then read until the longest daily horizon has passed; one more skew, as this clock may be ahead of
        a detect instance's."""
        return [name for name, day in self.tables()
                if day < date.max and now >= _midnight(day + DAY) + LAST_TURN + DAILY_HORIZON + 2 * CLOCK_SKEW]

    def drop(self, names: Sequence[str]) -> None:
        for name in names:
            self.service.delete_table(name)  # a missing table is no error
        with self._lock:
            self._tables = {day: table for day, table in self._tables.items() if self.name(day) not in names}

    def count(self, names: Sequence[str]) -> int:
        """Entities in those tables (the benchmark's and `replay --fresh`'s report)."""
        return sum(sum(1 for _ in self.service.get_table_client(name).list_entities(select=["RowKey"]))
                   for name in names)



def _located(day: date, stored: Stored) -> Stored:
    return Stored(stored.properties, f"{day:%Y%m%d}:{stored.etag}")


def _followed(day: date, tombstone: Stored) -> Stored:
    """A tombstone: the state it holds (none for a fence), to be written in the next day's table."""
    properties = {name: value for name, value in tombstone.properties.items() if name != MOVED}
    return Stored(properties if "state" in properties else {}, f"{day:%Y%m%d}:{_FOLLOW}")


def _location(etag: str | None) -> tuple[date | None, str | None]:
    if etag is None or etag[_SUFFIX:_SUFFIX + 1] != ":":
        return None, None
    day = _day(etag[:_SUFFIX])
    return (None, None) if day is None else (day, etag[_SUFFIX + 1:])


def _day(text: str) -> date | None:
    try:
        return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC).date()
    except ValueError:
        return None
