"""Day tables (`shared.detect.day_tables`) in a real Table Storage (Azurite): keys move into the new day
exactly, yesterday is read and fenced only within a rule's horizon of a partition's turn, writers whose
clock lags follow tombstones, a crash between the two steps loses nothing, and a day goes whole."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError

from shared.detect import day_tables
from shared.detect.day_tables import CLOCK_SKEW, LAST_TURN, MOVED, TURN_STEP, DayTables, day_of
from shared.detect.engine import Detector
from shared.detect.rules import Rule
from shared.detect.rules.rule import state_key
from shared.detect.state import (
    DAILY_HORIZON,
    DAY_PARTITIONS,
    GUESS_NEW_WINDOW,
    StateKey,
    StateTable,
    TableEntityStore,
    Write,
)
from tests.detect_fixtures import BURST_RULE, Tables, TransactionCounter, deletes, rule_from, run, tables

__all__ = ["tables"]  # the fixture, used by name

DAY = date(2026, 12, 2)
PARTITION = "3"  # turns at 09:00
TURN = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def rule(tmp_path: Path) -> Rule:
    counting = rule_from(tmp_path, BURST_RULE.replace("{gte: 10}", "{gte: 100000}"))
    assert counting.horizon == timedelta(minutes=110) and counting.horizon <= DAILY_HORIZON
    return counting


def actors(count: int, prefix: str, partition: str = PARTITION) -> list[str]:
    """Group values whose keys fall in one partition of the day tables."""
    found = (f"{prefix}-{n}" for n in range(100_000))
    return [actor for actor in found
            if StateKey.of("any", state_key((actor,)), daily=True).partition_key == partition][:count]


def clocked(tables: Tables, rule: Rule, moment: datetime,
            counter: TransactionCounter | None = None) -> tuple[Detector, Clock]:
    detector = tables.detector([rule], counter)
    clock = Clock(moment)
    assert detector.state.days is not None
    detector.state.days.clock = clock
    return detector, clock


def count(tables: Tables, rule: Rule, actor: str, at: datetime) -> int:
    """The key's count as an instance would read it at that moment."""
    state = day_tables.state_table(tables.service(), tables.state)
    assert state.days is not None
    state.days.clock = Clock(at)
    found = state.stored_state(state.key_of(rule, state_key((actor,))), state.daily_horizon(rule))
    return 0 if found is None else sum(bucket.count for bucket in found.buckets.values())


def entity(tables: Tables, day: date, rule: Rule, actor: str) -> dict[str, object] | None:
    key = StateKey.of(rule.id, state_key((actor,)), daily=True)
    try:
        return dict(tables.service().get_table_client(f"{tables.state}{day:%Y%m%d}").get_entity(*key))
    except ResourceNotFoundError:  # the entity or the table
        return None


def test_each_partition_turns_at_its_own_hour() -> None:
    assert day_of("0", datetime(2026, 12, 2, 0, 1, tzinfo=UTC)) == DAY
    assert day_of("3", datetime(2026, 12, 2, 8, 59, tzinfo=UTC)) == DAY - timedelta(days=1)
    assert day_of("3", TURN) == DAY
    assert day_of("7", datetime(2026, 12, 2, 20, 59, tzinfo=UTC)) == DAY - timedelta(days=1)
    assert day_of("7", datetime(2026, 12, 2, 21, 0, tzinfo=UTC)) == DAY
    assert [StateKey.of("burst", f"{digit}abc", daily=True).partition_key for digit in "0123456789abcdef"] == [
        str(index // 2) for index in range(16)]
    assert StateKey.of("burst", "6abc", daily=True) == StateKey("3", "burst.6abc")
    assert StateKey("3", "burst.6abc").rule_id == "burst" and StateKey("3", "burst.6abc").group_hash == "6abc"
    assert StateKey.of("burst", "3abc") == StateKey("burst.3", "3abc")


def test_a_key_moves_into_the_new_day_on_its_first_write_and_counts_on(tables: Tables, rule: Rule) -> None:
    actor = actors(1, "mover")[0]
    detector, clock = clocked(tables, rule, TURN - timedelta(minutes=30))
    run(detector, deletes(3, actor=actor))
    clock.moment = TURN + timedelta(minutes=10)
    run(detector, deletes(2, first=3, actor=actor), first_sequence=3)
    assert count(tables, rule, actor, clock.moment) == 5
    left = entity(tables, DAY - timedelta(days=1), rule, actor)
    assert left is not None and left[MOVED] == "1", "yesterday's copy is a tombstone"
    assert entity(tables, DAY, rule, actor) is not None
    later, _ = clocked(tables, rule, TURN + timedelta(hours=3))  # a fresh instance, past the window
    run(later, deletes(1, first=5, actor=actor), first_sequence=5)
    assert count(tables, rule, actor, TURN + timedelta(hours=3)) == 6


def test_in_the_window_a_key_guessed_new_that_lives_in_yesterday_s_table_counts_exactly(
        tables: Tables, rule: Rule) -> None:
    known, *new = actors(12, "window")
    before, _ = clocked(tables, rule, TURN - timedelta(minutes=5))
    run(before, deletes(2, actor=known), partition="1")
    after, _ = clocked(tables, rule, TURN + timedelta(minutes=20))
    learning = actors(GUESS_NEW_WINDOW, "flood", "4")  # now guessing that keys it has not cached are new
    run(after, [item for n, actor in enumerate(learning) for item in deletes(1, first=1000 + n, actor=actor)])
    events = [item for n, actor in enumerate([known, *new]) for item in deletes(1, first=100 + n, actor=actor)]
    report = run(after, events, first_sequence=len(learning))
    assert report.state_conflicts == 1, "the fence found the key in yesterday's table"
    assert report.state_reads == 2, "that key read: absent today, found yesterday"
    moment = TURN + timedelta(minutes=20)
    assert count(tables, rule, known, moment) == 3 and all(count(tables, rule, actor, moment) == 1 for actor in new)


def test_yesterday_is_read_and_fenced_within_the_horizon_of_the_turn_only(tables: Tables, rule: Rule) -> None:
    yesterday = f"{tables.state}{DAY - timedelta(days=1):%Y%m%d}"
    window = rule.horizon + CLOCK_SKEW
    for offset, touched in ((window - timedelta(minutes=1), True), (window + timedelta(minutes=1), False)):
        counter = TransactionCounter()
        detector, _ = clocked(tables, rule, TURN + offset, counter)
        batch = actors(5, f"late-{offset}")
        run(detector, [item for n, actor in enumerate(batch) for item in deletes(1, first=n, actor=actor)])
        assert any(yesterday in url for url in counter.urls) is touched
        assert all(count(tables, rule, actor, TURN + offset) == 1 for actor in batch)


def test_a_writer_whose_clock_lags_gets_412_and_follows_the_tombstone(tables: Tables, rule: Rule) -> None:
    actor = actors(1, "lagging")[0]
    lagging, _ = clocked(tables, rule, TURN - timedelta(minutes=1))
    ahead, _ = clocked(tables, rule, TURN + timedelta(minutes=1))
    run(lagging, deletes(2, actor=actor), partition="1")  # cached: yesterday's entity and its ETag
    run(ahead, deletes(3, first=10, actor=actor))  # moves it, leaving a tombstone
    report = run(lagging, deletes(4, first=20, actor=actor), partition="1", first_sequence=2)
    assert report.state_conflicts == 1
    assert count(tables, rule, actor, TURN + timedelta(minutes=1)) == 9


def test_a_lagging_writer_cannot_create_a_key_in_yesterday_s_table_once_it_was_fenced(
        tables: Tables, rule: Rule) -> None:
    actor = actors(1, "fenced")[0]
    ahead, _ = clocked(tables, rule, TURN + timedelta(minutes=1))
    lagging, _ = clocked(tables, rule, TURN - timedelta(minutes=1))
    run(ahead, deletes(2, actor=actor))  # new: an empty tombstone in yesterday's table first
    run(lagging, deletes(3, first=10, actor=actor), partition="1")
    assert count(tables, rule, actor, TURN + timedelta(minutes=1)) == 5
    fence = entity(tables, DAY - timedelta(days=1), rule, actor)
    assert fence is not None and fence[MOVED] == "1" and "state" not in fence


@pytest.mark.parametrize("redelivered_by", ["the same instance", "another instance"])
def test_a_crash_between_the_tombstone_and_the_new_day_s_entity_loses_nothing(
        tables: Tables, rule: Rule, redelivered_by: str) -> None:
    actor = actors(1, "crash")[0]
    detector, clock = clocked(tables, rule, TURN - timedelta(minutes=10))
    run(detector, deletes(3, actor=actor))
    clock.moment = TURN + timedelta(minutes=10)
    days = detector.state.days
    assert days is not None
    submit = days._submit
    calls: list[date] = []

    def dying(day: date, step: list[tuple[int, Write]], sent: int) -> list[str]:
        calls.append(day)
        if day == DAY:
            raise ServiceRequestError("simulated crash after the tombstone")
        return submit(day, step, sent)

    days._submit = dying  # type: ignore[method-assign]
    with pytest.raises(ServiceRequestError):
        run(detector, deletes(2, first=3, actor=actor), first_sequence=3)
    assert calls == [DAY - timedelta(days=1), DAY]
    left = entity(tables, DAY - timedelta(days=1), rule, actor)
    assert left is not None and left[MOVED] == "1" and entity(tables, DAY, rule, actor) is None
    del days._submit  # healed
    again = detector if redelivered_by == "the same instance" else clocked(tables, rule, clock.moment)[0]
    report = run(again, deletes(2, first=3, actor=actor), first_sequence=3)
    # The tombstone holds the state as written for this batch: its events are found counted, not counted again.
    assert count(tables, rule, actor, clock.moment) == 5 and report.redelivered == 2
    run(again, deletes(2, first=3, actor=actor), first_sequence=3)  # and once more: the watermark skips it
    assert count(tables, rule, actor, clock.moment) == 5


def test_two_instances_hammering_the_same_keys_across_the_turn_end_with_exact_counts(
        tables: Tables, rule: Rule) -> None:
    hot = actors(4, "hot")
    clocks: list[Clock] = []
    errors: list[BaseException] = []

    def work(partition: str, lag: timedelta) -> None:
        detector, clock = clocked(tables, rule, TURN - timedelta(minutes=5) - lag)
        clocks.append(clock)
        try:
            for step in range(20):
                clock.moment = TURN - timedelta(minutes=5) + step * timedelta(seconds=30) - lag
                events = [item for n, actor in enumerate(hot)
                          for item in deletes(1, first=1000 * int(partition) + 10 * step + n, actor=actor)]
                run(detector, events, partition=partition, first_sequence=len(hot) * step)
        except BaseException as error:  # reported below: a thread's failure must fail the test
            errors.append(error)

    threads = [threading.Thread(target=work, args=(partition, lag))
               for partition, lag in (("1", timedelta(0)), ("2", timedelta(minutes=2)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(count(tables, rule, actor, TURN + timedelta(minutes=6)) == 40 for actor in hot)


def test_housekeeping_drops_a_day_table_once_nothing_can_read_it(tables: Tables, rule: Rule) -> None:
    detector, _ = clocked(tables, rule, TURN + timedelta(minutes=10))
    run(detector, deletes(2, actor=actors(1, "dropped")[0]))  # today's entity, yesterday's fence
    names = [f"{tables.state}{day:%Y%m%d}" for day in (DAY - timedelta(days=1), DAY)]
    last_read = datetime(2026, 12, 3, tzinfo=UTC) + LAST_TURN + DAILY_HORIZON + 2 * CLOCK_SKEW  # DAY's
    assert detector.state.housekeep([rule], last_read - timedelta(days=1, seconds=1)).dropped == []
    assert detector.state.housekeep([rule], last_read - timedelta(days=1)).dropped == names[:1]
    assert detector.state.housekeep([rule], last_read - timedelta(seconds=1)).dropped == []
    assert detector.state.housekeep([rule], last_read).dropped == names[1:]
    days = detector.state.days
    assert days is not None and days.tables() == []


def test_clear_drops_every_day_table_and_counts_what_they_held(tables: Tables, rule: Rule) -> None:
    detector, _ = clocked(tables, rule, TURN + timedelta(minutes=10))
    run(detector, [item for n, actor in enumerate(actors(3, "cleared"))
                   for item in deletes(1, first=n, actor=actor)])
    assert detector.state.clear(TURN) == 6  # three keys today, three fences yesterday
    days = detector.state.days
    assert days is not None and days.tables() == []


def test_a_state_table_name_must_leave_room_for_the_day(tables: Tables) -> None:
    with pytest.raises(ValueError, match="no room"):
        DayTables(tables.service(), "s" * 56)
    assert timedelta(days=1) == TURN_STEP * DAY_PARTITIONS


@pytest.mark.parametrize("instance", ["fresh", "guessing keys new"])
def test_state_an_earlier_release_kept_in_the_state_table_carries_on(tables: Tables, rule: Rule, instance: str) -> None:
    """Releases before 0.3 kept every key in the state table (`<rule>.<digit>`): a window in flight at the
    upgrade goes on from there, even for an instance that inserts keys it has not cached without a read."""
    actor = actors(1, "upgraded")[0]
    earlier = tables.detector([rule])
    earlier.state = StateTable(TableEntityStore(tables.service().get_table_client(tables.state)))  # that layout
    run(earlier, deletes(3, actor=actor), partition="1")
    upgraded, clock = clocked(tables, rule, TURN + timedelta(hours=4))
    if instance == "guessing keys new":
        learning = actors(GUESS_NEW_WINDOW, "flood", "4")
        run(upgraded, [item for n, name in enumerate(learning) for item in deletes(1, first=1000 + n, actor=name)])
    run(upgraded, deletes(2, first=3, actor=actor), first_sequence=GUESS_NEW_WINDOW)
    assert count(tables, rule, actor, clock.moment) == 5


def test_the_batch_line_counts_every_request_the_day_tables_send(tables: Tables, rule: Rule) -> None:
    """Reads of today and yesterday, the check for an earlier release's keys, fences and moves: the batch
    line's `table_transactions` is what went on the wire, but for creating a table (once per process and
    table, a day table the first time this process writes it)."""
    counter = TransactionCounter()
    detector, clock = clocked(tables, rule, TURN - timedelta(minutes=10), counter)
    keys = actors(6, "counted")
    reports = [run(detector, [item for n, actor in enumerate(keys) for item in deletes(1, first=n, actor=actor)])]
    clock.moment = TURN + timedelta(minutes=10)  # moves the cached keys, fences new ones, reads uncached ones
    fresh, _ = clocked(tables, rule, clock.moment, counter)
    events = [item for n, actor in enumerate([*keys, *actors(6, "new")]) for item in deletes(1, first=100 + n,
                                                                                              actor=actor)]
    reports.append(run(detector, events, first_sequence=6))
    reports.append(run(fresh, events, partition="1"))
    created = sum(url.endswith("/Tables") for url in counter.urls)
    assert sum(report.table_transactions for report in reports) == counter.count - created
    assert reports[2].state_reads == 1, "the 12 keys found in today's table by one query"


def test_a_key_cached_from_before_yesterday_s_turn_is_written_today_even_once_that_table_is_gone(
        tables: Tables, rule: Rule) -> None:
    """Past the horizon of the turn nothing in yesterday's table matters, and housekeeping may have dropped
    it: a key this instance still caches from there is inserted today, with no tombstone left behind."""
    actor = actors(1, "late-cached", "7")[0]  # partition 7 turns at 21:00
    detector, clock = clocked(tables, rule, datetime(2026, 12, 2, 21, 10, tzinfo=UTC))
    run(detector, deletes(3, actor=actor))  # in the table of Dec 2
    clock.moment = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)  # partition 7 still on Dec 3; Dec 2 has no reader
    assert f"{tables.state}20261202" in detector.state.housekeep([rule], clock.moment).dropped
    report = run(detector, deletes(2, first=3, actor=actor), first_sequence=3)
    assert report.state_conflicts == 0 and count(tables, rule, actor, clock.moment) == 5


def test_a_fence_left_by_a_crash_does_not_hide_what_an_earlier_release_kept(tables: Tables, rule: Rule) -> None:
    actor = actors(1, "fenced-upgrade")[0]
    earlier = tables.detector([rule])
    earlier.state = StateTable(TableEntityStore(tables.service().get_table_client(tables.state)))  # 0.2's layout
    run(earlier, deletes(3, actor=actor), partition="1")
    dying, clock = clocked(tables, rule, TURN + timedelta(minutes=10))
    days = dying.state.days
    assert days is not None
    submit = days._submit

    def crash_after_the_fence(day: date, step: list[tuple[int, Write]], sent: int) -> list[str]:
        if day == DAY:
            raise ServiceRequestError("simulated crash after the fence")
        return submit(day, step, sent)

    days._submit = crash_after_the_fence  # type: ignore[method-assign]
    with pytest.raises(ServiceRequestError):
        run(dying, deletes(2, first=3, actor=actor))
    again, _ = clocked(tables, rule, clock.moment)  # the redelivery, on another instance
    run(again, deletes(2, first=3, actor=actor))
    assert count(tables, rule, actor, clock.moment) == 5


def test_a_conflict_after_the_tombstones_were_written_costs_one_more_round_not_one_per_key(
        tables: Tables, rule: Rule) -> None:
    moved, taken = actors(30, "moved"), actors(1, "taken")[0]
    detector, clock = clocked(tables, rule, TURN - timedelta(minutes=10))
    learning = actors(GUESS_NEW_WINDOW, "flood", "4")  # now guessing that keys it has not cached are new
    run(detector, [item for n, name in enumerate(learning) for item in deletes(1, first=1000 + n, actor=name)])
    run(detector, [item for n, name in enumerate(moved) for item in deletes(1, first=n, actor=name)],
        first_sequence=GUESS_NEW_WINDOW)
    clock.moment = TURN + timedelta(minutes=2)
    run(detector, deletes(1, first=400, actor=taken), first_sequence=GUESS_NEW_WINDOW + 30)  # cached today
    other, _ = clocked(tables, rule, TURN + timedelta(minutes=5))
    run(other, deletes(1, first=500, actor=taken), partition="1")  # the cached ETag is stale now: a 412
    clock.moment = TURN + timedelta(minutes=10)
    events = [item for n, name in enumerate([*moved, taken]) for item in deletes(1, first=600 + n, actor=name)]
    report = run(detector, events, first_sequence=GUESS_NEW_WINDOW + 31)
    assert report.state_conflicts == 1
    assert all(count(tables, rule, name, clock.moment) == 2 for name in moved)
    assert count(tables, rule, taken, clock.moment) == 3


def test_first_seen_rules_keep_their_keys_beside_their_learning_marker_whatever_their_forget(
        tables: Tables, tmp_path: Path) -> None:
    short_forget = rule_from(tmp_path, """
        title: New subscription for a caller
        name: short-forget
        id: 5e1f0000-0000-4000-8000-000000000009
        description: test
        level: low
        logsource: {product: azure}
        detection: {deleted: {action: delete}, condition: deleted}
        group-by: [actor]
        first_seen: {fields: [subscription_id], forget: 1h, learning: 0s}
        """)
    assert short_forget.horizon <= DAILY_HORIZON
    detector = tables.detector([short_forget])
    assert detector.state.daily_horizon(short_forget) is None
