"""Detection state in a real Table Storage (Azurite): ETag concurrency, exact counts under contention,
safe keys, bounded entities, housekeeping."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.data.tables import UpdateMode

from shared.detect.day_tables import DayTables
from shared.detect.rules import Rule
from shared.detect.rules.aggregate import Bucket, KeyState, Transition
from shared.detect.rules.rule import state_key
from shared.detect.state import (
    GUESS_NEW_WINDOW,
    LEARNING_ROW,
    READ_MANY_KEYS,
    Housekept,
    StateConflictError,
    StateKey,
    StateTable,
    StateTooLargeError,
    TableEntityStore,
    Write,
    decode_state,
    encode_state,
)
from tests.detect_fixtures import BURST_RULE, T0, Tables, TransactionCounter, deletes, rule_from, run, tables

__all__ = ["tables"]  # the fixture, used by name


def store_of(tables: Tables) -> TableEntityStore:
    store = TableEntityStore(tables.service().get_table_client(tables.state))
    store.ensure_table()
    return store


def test_a_stale_etag_really_gets_412_from_the_table(tables: Tables) -> None:
    """Proves the mechanism, not the emulator's leniency: Azurite once accepted stale ETags."""
    client = tables.service().get_table_client(tables.state)
    client.create_table()
    created = client.create_entity({"PartitionKey": "p", "RowKey": "r", "count": 1})
    client.update_entity({"PartitionKey": "p", "RowKey": "r", "count": 2}, mode=UpdateMode.REPLACE)
    with pytest.raises(ResourceModifiedError) as refused:
        client.update_entity({"PartitionKey": "p", "RowKey": "r", "count": 3}, mode=UpdateMode.REPLACE,
                             etag=created["etag"], match_condition=MatchConditions.IfNotModified)
    assert refused.value.status_code == 412
    assert client.get_entity("p", "r")["count"] == 2
    with pytest.raises(ResourceExistsError):
        client.create_entity({"PartitionKey": "p", "RowKey": "r"})


def test_the_store_turns_412_409_and_404_into_conflicts(tables: Tables) -> None:
    store = store_of(tables)
    entity = {"PartitionKey": "p", "RowKey": "r", "state": "{}"}
    first = store.insert(entity)
    with pytest.raises(StateConflictError):
        store.insert(entity)  # 409
    second = store.replace(entity, first)
    with pytest.raises(StateConflictError):
        store.replace(entity, first)  # 412
    assert not store.delete("p", "r", first)
    assert store.delete("p", "r", second)
    with pytest.raises(StateConflictError):
        store.replace(entity, second)  # 404: deleted meanwhile


def test_a_conflicting_write_is_reread_and_reapplied(tables: Tables, tmp_path: Path) -> None:
    """Two instances with cached ETags: the second write gets 412, re-reads, and both counts survive."""
    rule = rule_from(tmp_path, BURST_RULE.replace("{gte: 10}", "{gte: 1000}"))
    first, second = tables.detector([rule]), tables.detector([rule])
    run(first, deletes(3), partition="0")
    run(second, deletes(4, first=100), partition="1")
    report = run(first, deletes(5, first=200), partition="0", first_sequence=3)
    assert report.state_conflicts == 1 and report.state_reads == 1  # its cached ETag was stale
    assert tables.count_of(rule, "mallory@contoso.example") == 12


def hammer(tables: Tables, rule: Rule, worker: int, batches: int, errors: list[BaseException]) -> None:
    """One function instance: its own clients and cache, its own partition, the same five callers."""
    detector = tables.detector([rule])
    try:
        for number in range(batches):
            events = [event for caller in range(5) for event in deletes(
                4, T0 + timedelta(seconds=number), first=worker * 100_000 + number * 100 + caller * 10,
                actor=f"caller-{caller}")]
            run(detector, events, partition=str(worker), first_sequence=number * len(events))
    except BaseException as error:
        errors.append(error)


def test_two_workers_hammering_the_same_keys_end_with_exact_counts(tables: Tables, tmp_path: Path) -> None:
    rule = rule_from(tmp_path, BURST_RULE.replace("{gte: 10}", "{gte: 100000}"))
    errors: list[BaseException] = []
    workers = [threading.Thread(target=hammer, args=(tables, rule, worker, 25, errors)) for worker in (1, 2)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert not errors
    for caller in range(5):
        state = tables.state_of(rule, f"caller-{caller}")
        assert state is not None
        assert sum(bucket.count for bucket in state.buckets.values()) == 2 * 25 * 4
        last = 24 * 20 + caller * 4 + 3  # the caller's last event in the last batch of each partition
        assert state.watermarks == {"1": last, "2": last}


def test_contention_is_resolved_by_retrying_not_by_losing_updates(tables: Tables) -> None:
    """Many writers on one entity through StateTable.update: every increment lands exactly once."""
    store = store_of(tables)
    key = StateKey.of("counter", "k")

    def add_one(before: KeyState | None) -> Transition:
        state = before.copy() if before else KeyState()
        state.buckets[0] = Bucket((state.buckets[0].count if 0 in state.buckets else 0) + 1, 0, 0)
        return Transition(state=state)

    conflicts: list[int] = []

    def writer() -> None:
        table = StateTable(TableEntityStore(tables.service().get_table_client(tables.state)))
        for _ in range(20):
            conflicts.append(table.update(key, {}, add_one).conflicts)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = store.read(*key)
    assert stored is not None and decode_state(stored.properties).buckets[0].count == 80
    assert sum(conflicts) > 0  # the retry path really ran


def test_group_values_with_forbidden_key_characters_are_safe(tables: Tables, tmp_path: Path) -> None:
    rule = rule_from(tmp_path, BURST_RULE)
    detector = tables.detector([rule])
    awkward = ["a/b", "c\\d", "e#f", "g?h", "tab\there", "line\nbreak", "x" * 2000, "ünïcødé ✓"]
    for index, actor in enumerate(awkward):
        run(detector, deletes(2, first=10 * index, actor=actor), first_sequence=2 * index)
    for actor in awkward:
        assert tables.count_of(rule, actor) == 2
    entity = tables.state_rows()[0]
    assert entity["RowKey"].startswith("burst.") and len(entity["RowKey"]) == len("burst.") + 32
    assert entity["rule"] == "burst" and len(entity["group"]) < 400


def test_a_large_state_is_split_over_properties_and_bounded() -> None:
    state = KeyState(buckets={start: Bucket(1, 0, 0, {f"{start:08x}{n:08x}" for n in range(500)})
                              for start in range(20)})
    properties = encode_state(state)
    assert len(properties) > 1 and all(len(chunk) <= 16_000 for chunk in properties.values())
    assert decode_state(properties) == state
    huge = KeyState(buckets={start: Bucket(1, 0, 0, {f"{start:08x}{n:08x}" for n in range(5000)})
                             for start in range(60)})
    with pytest.raises(StateTooLargeError):
        encode_state(huge)


def test_a_large_state_round_trips_through_the_table(tables: Tables) -> None:
    store = store_of(tables)
    state = KeyState(buckets={start: Bucket(1, 0, 0, {f"{start:08x}{n:08x}" for n in range(900)})
                              for start in range(20)})
    table = StateTable(store)

    table.update(StateKey.of("big", "k"), {}, lambda before: Transition(state=state))
    stored = store.read("big.k", "k")
    assert stored is not None and decode_state(stored.properties) == state


HOUSEKEEPING_RULES = {
    "short": BURST_RULE.replace("burst", "short").replace("timespan: 10m", "timespan: 1m")
             .replace("lateness: 30m", "lateness: 1m").replace("suppress: 1h", "suppress: 1m"),
    "country": """
        title: New country
        name: country
        id: 5e1f0000-0000-4000-8000-000000000003
        description: test
        level: medium
        logsource: {product: azure}
        detection: {signed_in: {action: delete}, condition: signed_in}
        group-by: [actor]
        first_seen: {fields: [subscription_id]}
        """,
    "long": BURST_RULE.replace("burst", "long").replace("timespan: 10m", "timespan: 7h")
            .replace("lateness: 30m", "lateness: 1m").replace("suppress: 1h", "suppress: 1m"),
}


def test_housekeeping_deletes_expired_state_only(tables: Tables, tmp_path: Path) -> None:
    rules = [rule_from(tmp_path, text, f"{name}.yaml") for name, text in HOUSEKEEPING_RULES.items()]
    short, country, long = rules
    assert short.horizon == timedelta(minutes=4) and country.horizon == timedelta(days=90)
    assert long.horizon == timedelta(hours=14, minutes=2), "past DAILY_HORIZON: one entity per key, deleted one by one"
    detector = tables.detector(rules)
    run(detector, deletes(3, actor="a") + deletes(3, first=3, actor="b"))
    store = store_of(tables)
    orphan = {"PartitionKey": "removed-rule.0", "RowKey": "0k", "state": KeyState().to_json()}
    store.insert(orphan)
    now = datetime.now(UTC)
    assert detector.state.housekeep(rules, now) == Housekept({}, [])  # nothing is old yet
    assert detector.state.housekeep(rules, now + long.horizon + timedelta(minutes=1)) == Housekept({"long": 2}, [])
    assert tables.state_of(long, "a") is None and tables.state_of(short, "a") is not None  # a day goes whole
    assert store.read("country", LEARNING_ROW) is not None
    later = detector.state.housekeep(rules, now + timedelta(days=31))
    assert later.deleted == {"removed-rule": 1} and later.dropped
    assert tables.state_of(short, "a") is None
    assert detector.state.housekeep(rules, now + timedelta(days=91)).deleted == {"country": 2}
    assert store.read("country", LEARNING_ROW) is not None  # the learning start is kept
    # The detector's cache still holds the deleted entities' ETags: the next batch must recover.
    days = detector.state.days
    assert days is not None
    days.clock = lambda: now + timedelta(days=91)
    report = run(detector, deletes(2, T0 + timedelta(minutes=5), first=10, actor="a"), first_sequence=10)
    moved_on = detector.state.stored_state(detector.state.key_of(short, state_key(("a",))), short.horizon)
    assert report.state_conflicts == 0 and tables.count_of(long, "a") == 2
    assert moved_on is not None and sum(bucket.count for bucket in moved_on.buckets.values()) == 2


def test_housekeeping_lists_only_rules_that_keep_state_and_clears_rows_a_rule_kept_before_an_edit(
        tables: Tables, tmp_path: Path) -> None:
    plain = rule_from(tmp_path, BURST_RULE.split("---")[0])  # every delete an alert: no state
    assert not plain.stateful
    store = store_of(tables)
    store.insert({"PartitionKey": f"{plain.id}.0", "RowKey": "0k", "state": KeyState().to_json()})  # suppressed once
    counter = TransactionCounter()
    state = StateTable(TableEntityStore(tables.service(counter).get_table_client(tables.state)))
    now = datetime.now(UTC)
    assert state.housekeep([plain], now + timedelta(days=1)).deleted == {}
    assert counter.methods.count("GET") == 1, "one listing: the orphans'; none for a rule without state"
    assert state.housekeep([plain], now + timedelta(days=31)).deleted == {plain.id: 1}


def test_housekeeping_keeps_an_entity_written_after_it_was_listed(tables: Tables) -> None:
    store = store_of(tables)
    etag = store.insert({"PartitionKey": "short", "RowKey": "k", "state": "{}"})
    store.replace({"PartitionKey": "short", "RowKey": "k", "state": "{}"}, etag)
    assert not store.delete("short", "k", etag)  # a concurrent update wins over the delete
    assert store.read("short", "k") is not None


def test_transactions_grow_with_keys_touched_not_with_events(tables: Tables, tmp_path: Path) -> None:
    rule = rule_from(tmp_path, BURST_RULE.replace("{gte: 10}", "{gte: 100000}"))
    counter = TransactionCounter()
    detector = tables.detector([rule], counter)
    run(detector, deletes(1, actor="warm-up"))  # table creation happens once per process
    counter.reset()
    callers = [f"caller-{n % 5}" for n in range(100)]
    events = [event for n, actor in enumerate(callers) for event in deletes(1, first=1000 + n, actor=actor)]
    report = run(detector, events, first_sequence=1)
    assert report.keys_touched == 5 and counter.count <= 2 * 5
    partitions = {detector.state.key_of(rule, state_key((actor,))).partition_key for actor in set(callers)}
    # One read per partition (a query when it holds several keys), and partition 0, which turned its day 88
    # minutes before the pinned hour, looks in yesterday's table too.
    assert counter.methods.count("GET") == len(partitions) + ("0" in partitions)
    counter.reset()
    run(detector, [{**item, "event_id": item["event_id"] + "-b"} for item in events], first_sequence=101)
    assert counter.count == len(partitions)  # entities and ETags cached between batches: one write per partition


def flood(count: int, first: int, prefix: str) -> list[dict[str, Any]]:
    """One delete per new caller: every event a key no one has seen."""
    return [item for n in range(count) for item in deletes(1, first=first + n, actor=f"{prefix}-{n}")]


def test_a_flood_of_new_keys_is_inserted_without_reads_and_a_key_that_exists_still_counts_exactly(
        tables: Tables, tmp_path: Path) -> None:
    rule = rule_from(tmp_path, BURST_RULE.replace("{gte: 10}", "{gte: 100000}"))
    counter = TransactionCounter()
    detector = tables.detector([rule], counter)
    run(tables.detector([rule]), deletes(2, first=90_000, actor="known"), partition="1")  # another instance
    learning = flood(GUESS_NEW_WINDOW, 0, "flood")
    first = run(detector, learning)  # a fresh process reads first, and learns that its new keys are new
    # A query per READ_MANY_KEYS keys of a partition; partition 0 turned its day 88 minutes before the pinned
    # hour, so its keys are looked for in yesterday's table too, which does not exist (one query, a 404); and
    # one request checks whether an earlier release kept the rule's keys in the state table.
    per_partition = Counter(detector.state.key_of(rule, state_key((f"flood-{n}",))).partition_key
                            for n in range(GUESS_NEW_WINDOW))
    queries = sum(math.ceil(keys / READ_MANY_KEYS) for keys in per_partition.values())
    assert first.state_reads == queries + 1 + 1
    counter.reset()
    events = [*flood(99, 10_000, "new"), *deletes(1, first=20_000, actor="known")]
    report = run(detector, events, first_sequence=len(learning))
    assert counter.methods.count("GET") == 1, "only the key that existed is read, after its insert conflicted"
    # one transaction per partition, one retried; partition 0 also fences yesterday's table at the pinned hour
    assert report.state_conflicts == 1 and counter.count <= 16 + 1 + 2
    assert tables.count_of(rule, "known") == 3 and tables.count_of(rule, "new-42") == 1


def test_a_stale_etag_in_a_transaction_rereads_that_key_and_rewrites_the_partition(
        tables: Tables, tmp_path: Path) -> None:
    rule = rule_from(tmp_path, BURST_RULE.replace("{gte: 10}", "{gte: 100000}"))
    first, second = tables.detector([rule]), tables.detector([rule])
    callers = [f"caller-{n}" for n in range(60)]  # about four keys in each of the rule's 16 partitions
    events = [item for n, actor in enumerate(callers) for item in deletes(1, first=n, actor=actor)]
    run(first, events)
    run(second, deletes(1, first=1000, actor="caller-7"), partition="1")  # first's cached ETag is now stale
    report = run(first, [{**item, "event_id": item["event_id"] + "-b"} for item in events], first_sequence=100)
    assert report.state_conflicts == 1 and report.state_reads == 1
    assert tables.count_of(rule, "caller-7") == 3
    assert all(tables.count_of(rule, actor) == 2 for actor in callers if actor != "caller-7")


class _RefusingOneKey(TableEntityStore):
    """Storage refuses one key's row for what it holds (any 4xx), inside a transaction or alone."""

    @staticmethod
    def _padded(properties: dict[str, Any]) -> dict[str, Any]:
        return {**properties, "padding": "x" * 40_000} if "huge@" in properties.get("group", "") else properties

    def insert(self, properties: dict[str, Any]) -> str:
        return super().insert(self._padded(properties))

    def write_batch(self, writes: Sequence[Write]) -> list[str]:
        return super().write_batch([write._replace(properties=self._padded(write.properties)) for write in writes])


def test_a_row_refused_inside_a_transaction_costs_only_its_own_events(tables: Tables, tmp_path: Path) -> None:
    rule = rule_from(tmp_path, BURST_RULE.replace("{gte: 10}", "{gte: 100000}"))
    detector = tables.detector([rule])
    service = tables.service()
    detector.state = StateTable(_RefusingOneKey(service.get_table_client(tables.state)),
                                days=DayTables(service, tables.state, store=_RefusingOneKey))
    callers = ["huge@contoso.example", *(f"caller-{n}" for n in range(60))]
    events = [item for n, actor in enumerate(callers) for item in deletes(2, first=10 * n, actor=actor)]
    report = run(detector, events)
    assert report.rule_errors == 1 and report.dead_letters == 2
    assert tables.count_of(rule, "huge@contoso.example") == 0
    assert all(tables.count_of(rule, actor) == 2 for actor in callers[1:])


def test_housekeeping_deletes_a_hundred_rows_per_transaction_and_spares_a_row_written_since(
        tables: Tables) -> None:
    store = store_of(tables)
    etags = {f"r{n:03d}": store.insert({"PartitionKey": "short.0", "RowKey": f"r{n:03d}", "state": "{}"})
             for n in range(150)}
    store.replace({"PartitionKey": "short.0", "RowKey": "r042", "state": "{}"}, etags["r042"])  # updated since
    counter = TransactionCounter()
    counted = TableEntityStore(tables.service(counter).get_table_client(tables.state))
    deleted = counted.delete_batch("short.0", sorted(etags.items()))
    assert len(deleted) == 149 and "r042" not in deleted and store.read("short.0", "r042") is not None
    assert counter.count == 3, "two transactions of 100 and 50; the first retried without the row written since"


def test_a_partition_of_keys_guessed_new_that_all_exist_is_read_after_the_second_wrong_guess(
        tables: Tables, tmp_path: Path) -> None:
    rule = rule_from(tmp_path, BURST_RULE.replace("{gte: 10}", "{gte: 100000}"))
    same_partition = [actor for actor in (f"old-{n}" for n in range(400)) if state_key((actor,))[0] == "0"][:8]
    run(tables.detector([rule]), [item for n, actor in enumerate(same_partition)
                                  for item in deletes(1, first=50_000 + n, actor=actor)], partition="1")
    detector = tables.detector([rule])
    run(detector, flood(GUESS_NEW_WINDOW, 0, "flood"))  # now guessing that keys it has not cached are new
    report = run(detector, [item for n, actor in enumerate(same_partition)
                            for item in deletes(1, first=60_000 + n, actor=actor)], first_sequence=GUESS_NEW_WINDOW)
    # the first wrong guess re-reads its key; the second reads all the partition's guesses, in one query
    assert report.state_conflicts == 2 and report.state_reads == 2
    assert all(tables.count_of(rule, actor) == 2 for actor in same_partition)


def test_a_fresh_instance_reads_the_keys_it_has_not_cached_a_query_per_partition_and_counts_on(
        tables: Tables, tmp_path: Path) -> None:
    long = rule_from(tmp_path, HOUSEKEEPING_RULES["long"])  # kept in the state table, not in day tables
    callers = [f"known-{n}" for n in range(40)]
    events = [item for n, actor in enumerate(callers) for item in deletes(1, first=n, actor=actor)]
    run(tables.detector([long]), events, partition="1")
    fresh = tables.detector([long])
    report = run(fresh, [{**item, "event_id": item["event_id"] + "-b"} for item in events])
    per_partition = Counter(fresh.state.key_of(long, state_key((actor,))).partition_key for actor in callers)
    assert report.state_reads == sum(math.ceil(keys / READ_MANY_KEYS) for keys in per_partition.values())
    assert report.state_conflicts == 0 and all(tables.count_of(long, actor) == 2 for actor in callers)
