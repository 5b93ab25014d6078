"""Crash/redelivery soak: a generated stream through normalize and detect, with crashes, compared with a
clean run of the same stream.

The stream: Activity Log and sign-in records made from the samples, keys drawn with Zipf skew (one hot
production subscription, a few busy callers, users and IPs, a long tail), 0.5 s of event time apart,
one record per body as diagnostic settings mostly send them. Each of several "partitions" is a
process, as on Event Hubs: normalize runs per raw partition, its events are routed to the normalized
hub's partitions by partition key (subscription, or tenant and user for Entra ID), detect runs per normalized
partition. A key fed from several partitions (password-spray's IPs) depends on how far the partition
processes drift apart (README "Operations"): long runs in 4 partitions show it.

The faulty run injects, per batch and at random: the dead-letter store or the fan-out failing before
the batch is safe (normalize raises, the batch is redelivered); the state store dying between two
writes (detect raises; the instance is replaced, with empty caches, and resumes from its checkpoint
with a different batch size); a lost checkpoint (a successful batch and up to two before it are
delivered again). The clean run has no faults. At the end the state tables, alert rows (the events each
alert lists included) and published alerts of the two runs must be equal: any difference is printed and
the exit status is 1.
Run: `.venv/bin/python bench/soak.py [--events 200000] [--partitions 4]`.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import orjson
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient, TableServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.cli import azurite
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import Position
from shared.clients.publisher import InProcessPublisher, OutgoingEvent
from shared.clients.storage import table_service
from shared.detect.alerts import TableAlertStore
from shared.detect.day_tables import DayTables
from shared.detect.engine import RULES_DIR, Detector, detect_batch
from shared.detect.rules import load_rules
from shared.detect.state import LEARNING_ROW, StateTable, TableEntityStore, Write, decode_state
from shared.normalize.batch import normalize_bodies, process_batch
from shared.normalized_event import DeadLetter
from shared.settings import Settings

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
BATCH = 100
PRODUCTION = "a1b2c3d4-1111-4111-8111-000000000001"
SAMPLE_CALLER = "de910e00-0000-4000-8000-00000000a991"
START = datetime(2026, 11, 27, tzinfo=UTC)
Key = TypeVar("Key")
MAX_RECOVERIES = 1_000  # per partition: a soak that cannot finish must stop, not spin


def _records(relative: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = orjson.loads((SAMPLES / relative).read_bytes())["records"]
    return records


def _zipf(rng: random.Random, size: int) -> int:
    """Rank 0..size-1 with weight 1/(rank+1): a few hot keys and a long tail."""
    return min(int(size ** rng.random()) - 1, size - 1)


def generate(count: int, seed: int) -> list[bytes]:
    """`count` raw bodies: 80 % ordinary Activity Log, 12 % completed deletes, 8 % failed sign-ins,
    and one body in 1,000 with two records that cannot be normalized."""
    rng = random.Random(seed)
    ordinary = [orjson.dumps(record).decode() for record in _records("activity/ordinary-day.json")]
    delete = next(orjson.dumps(record).decode() for record in _records("attack/delete-spike.json")
                  if record["resultType"] == "Success")
    signin = orjson.dumps(_records("attack/password-spray.json")[0]).decode()
    bodies = []
    for number in range(count):
        if number % 1000 == 999:  # a poison body now and then: two records that are not objects
            bodies.append(b'{"records": [null, 42]}')
            continue
        moment = (START + timedelta(seconds=number / 2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        draw = rng.random()
        if draw < 0.08:
            record = orjson.loads(signin)
            record["time"] = record["properties"]["createdDateTime"] = moment
            record["properties"].update(id=f"soak-{number}",
                                        userPrincipalName=f"user-{_zipf(rng, 300)}@contoso.example",
                                        ipAddress=f"198.51.{_zipf(rng, 50)}.{_zipf(rng, 200)}")
        else:
            template = delete if draw < 0.2 else ordinary[number % len(ordinary)]
            subscription = PRODUCTION if rng.random() < 0.5 else f"50a50a50-0000-4000-8000-{_zipf(rng, 16):012d}"
            caller = f"ca11e700-0000-4000-8000-{_zipf(rng, 500):012d}"
            record = orjson.loads(template.replace(PRODUCTION, subscription).replace(SAMPLE_CALLER, caller))
            record["time"] = moment
            record["properties"]["eventDataId"] = f"soak-{number}"
        bodies.append(orjson.dumps({"records": [record]}))
    return bodies


@dataclass(frozen=True)
class Plan:
    """What to break, per batch, and how often: all zero is the clean run."""

    seed: int
    crash: float = 0.0  # a store fails during this batch
    rewind: float = 0.0  # the checkpoint of a successful batch is lost

    def partition(self, index: int) -> Plan:
        return Plan(self.seed * 1000 + index, self.crash, self.rewind)


@dataclass
class Faults:
    """One partition's dice, seeded by its plan so that a run can be repeated."""

    plan: Plan
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.plan.seed)

    def roll(self, chance: float) -> bool:
        return self.rng.random() < chance


class CrashingStore(TableEntityStore):
    """A state or day table of one instance, which dies once `budget[0]` more writes, shared by all its
    tables, are spent (a crash between state writes); None: it lives."""

    def __init__(self, table: TableClient, budget: list[int] | None) -> None:
        super().__init__(table)
        self.budget = budget

    def _spend(self) -> None:
        if self.budget is not None:
            if self.budget[0] <= 0:
                raise ServiceRequestError("simulated crash between state writes")
            self.budget[0] -= 1

    def insert(self, properties: dict[str, Any]) -> str:
        self._spend()
        return super().insert(properties)

    def replace(self, properties: dict[str, Any], etag: str) -> str:
        self._spend()
        return super().replace(properties, etag)

    def write_batch(self, writes: Sequence[Write]) -> list[str]:
        if len(writes) > 1:  # one write goes through insert or replace, which spend it
            self._spend()
        return super().write_batch(writes)


class FlakyDeadLetters(InMemoryDeadLetterStore):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    def write(self, letters: Sequence[DeadLetter]) -> None:
        if self.faults.roll(self.faults.plan.crash / 2):
            raise ServiceRequestError("simulated dead-letter store outage")
        super().write(letters)


class FlakyPublisher(InProcessPublisher):
    """Fails before sending (the failure an SDK reports once its retries are spent)."""

    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    def publish(self, hub: str, events: Sequence[OutgoingEvent]) -> None:
        if self.faults.roll(self.faults.plan.crash / 2):
            raise ServiceRequestError("simulated fan-out outage")
        super().publish(hub, events)


@dataclass
class Delivery:
    """Event Hubs as one partition's consumer sees it: batches from a checkpoint, redelivered on failure."""

    bodies: Sequence[bytes]
    partition: str
    faults: Faults
    checkpoint: int = 0
    history: list[int] = field(default_factory=list)  # earlier checkpoints, for a lost checkpoint
    failures: int = 0
    rewinds: int = 0
    enqueued: datetime = field(default_factory=lambda: datetime.now(UTC))

    def batches(self) -> Iterator[list[tuple[bytes, Position]]]:
        """Batches with their positions until the end; the caller reports a failed one with `failed`.

        Positions are built directly: the host's converter (`trigger_batch`) parses each enqueued time
        with strptime and would cost more CPU than detect itself at this volume.
        """
        recoveries = 0
        while self.checkpoint < len(self.bodies):
            size = BATCH if not self.failures else self.faults.rng.randint(1, BATCH)
            last = min(self.checkpoint + size, len(self.bodies))
            before = self.failures
            yield [(self.bodies[sequence], Position(self.partition, sequence, str(sequence), self.enqueued))
                   for sequence in range(self.checkpoint, last)]
            if self.failures > before:
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise RuntimeError(f"partition {self.partition}: more than {MAX_RECOVERIES} failures")
                continue
            self.history.append(self.checkpoint)
            self.checkpoint = last
            if self.faults.roll(self.faults.plan.rewind):
                self.rewinds += 1
                self.checkpoint = self.history[-self.faults.rng.randint(1, min(3, len(self.history)))]

    def failed(self) -> None:
        self.failures += 1


@dataclass
class NormalizeResult:
    events: list[tuple[str, bytes]]  # (partition key, body) as published, duplicates from rewinds included
    dead_letters: set[tuple[str | None, int | None, int | None]]  # positions: a rewind writes them again
    failures: int
    rewinds: int


def normalize_partition(bodies: Sequence[bytes], partition: str, plan: Plan) -> NormalizeResult:
    faults = Faults(plan)
    publisher, letters = FlakyPublisher(faults), FlakyDeadLetters(faults)
    settings = Settings()
    delivery = Delivery(bodies, partition, faults)
    for batch in delivery.batches():
        try:
            process_batch(batch, publisher, letters, settings)
        except ServiceRequestError:
            delivery.failed()
    events = [(event.partition_key, event.body) for event in publisher.hubs[settings.normalized_hub]]
    dead = {(letter.partition, letter.sequence_number, letter.record_index) for letter in letters.letters}
    return NormalizeResult(events, dead, delivery.failures, delivery.rewinds)


@dataclass
class DetectResult:
    published: list[str]
    failures: int
    rewinds: int


def detect_partition(bodies: Sequence[bytes], partition: str, plan: Plan, connection: str,
                     tables: tuple[str, str]) -> DetectResult:
    faults = Faults(plan)
    crash = plan.crash
    # The soak's estate is catalogued: its unlisted subscriptions (the long tail) are development, so the
    # production-scoped rules see one hot subscription, on one partition, as a catalogued estate would.
    rules = load_rules(RULES_DIR, unknown_subscriptions="development").rules
    publisher = InProcessPublisher()
    delivery = Delivery(bodies, partition, faults)

    def instance() -> Detector:
        """A fresh function instance (new clients, empty caches), maybe doomed to die during its batch."""
        service = table_service(Settings(storage_connection_string=connection))  # as detect_fn builds it
        doomed = [faults.rng.randint(0, 20)] if faults.roll(crash) else None
        days = DayTables(service, tables[0], store=lambda table: CrashingStore(table, doomed))
        state = StateTable(CrashingStore(service.get_table_client(tables[0]), doomed), days=days)
        return Detector(rules=rules, state=state,
            alerts=TableAlertStore(service.get_table_client(tables[1])), publisher=publisher,
            alerts_hub="alerts", dead_letters=InMemoryDeadLetterStore())

    detector = instance()
    for batch in delivery.batches():
        try:
            detect_batch(batch, detector)
        except ServiceRequestError:
            delivery.failed()
            detector = instance()
            continue
        if crash and faults.roll(crash):
            detector = instance()
    published = [orjson.loads(event.body)["alert_id"] for event in publisher.hubs["alerts"]]
    return DetectResult(published, delivery.failures, delivery.rewinds)


def _quiet() -> None:
    """Each batch's log line is for Application Insights; thousands of them would bury the result."""
    logging.disable(logging.CRITICAL)


def hub_partition(key: str, partitions: int) -> str:
    """Event Hubs hashes the partition key to a partition: same key, same partition, in order."""
    return str(zlib.crc32(key.encode()) % partitions)


@dataclass
class RunResult:
    records_in: int
    events_out: int
    dead_letters: int
    published_alerts: Counter[str]
    state: dict[tuple[str, str], str]  # state documents, keys sorted
    alert_rows: dict[str, bytes]
    failures: int
    rewinds: int
    seconds: float


def run(raw: Sequence[bytes], partitions: int, connection: str, name: str, plan: Plan) -> RunResult:
    started = time.perf_counter()
    tables = (f"soakstate{name}", f"soakalerts{name}")
    raw_parts = [list(raw[index::partitions]) for index in range(partitions)]
    with ProcessPoolExecutor(partitions, mp_context=get_context("spawn"), initializer=_quiet) as pool:
        names = [str(index) for index in range(partitions)]
        normalized = list(pool.map(normalize_partition, raw_parts, names, map(plan.partition, range(partitions))))
        # Rewinds republish: a downstream consumer sees those events again with new sequence numbers,
        # which detect cannot tell from new events. Keep the first copy of each event id, as the hub
        # would hold it had normalize not been rewound (see docs/operations.md, "known limits").
        routed: dict[str, list[bytes]] = {str(index): [] for index in range(partitions)}
        seen: set[str] = set()
        for result in normalized:
            for key, body in result.events:
                event_id = orjson.loads(body)["event_id"]
                if event_id not in seen:
                    seen.add(event_id)
                    routed[hub_partition(key, partitions)].append(body)
        detected = list(pool.map(detect_partition, routed.values(), routed.keys(),
                                 map(plan.partition, range(100, 100 + partitions)), [connection] * partitions,
                                 [tables] * partitions))
    service = TableServiceClient.from_connection_string(connection)
    state = state_documents(state_rows(service, tables[0]))
    rows = alert_rows(service.get_table_client(tables[1]).list_entities())
    return RunResult(
        records_in=normalize_bodies([(body, Position()) for body in raw], include_raw=False).records_in,
        events_out=len(seen), dead_letters=sum(len(result.dead_letters) for result in normalized),
        published_alerts=Counter(alert for result in detected for alert in result.published),
        state=state, alert_rows=rows,
        failures=sum(result.failures for result in normalized) + sum(result.failures for result in detected),
        rewinds=sum(result.rewinds for result in normalized) + sum(result.rewinds for result in detected),
        seconds=time.perf_counter() - started)


def state_rows(service: TableServiceClient, name: str) -> Iterator[dict[str, Any]]:
    """The rows of the state table and its day tables, in day order: a key's latest copy comes last."""
    found = service.query_tables("TableName ge @low and TableName le @high",
                                 parameters={"low": name, "high": f"{name}99999999"})
    for table in sorted(table.name for table in found):
        yield from service.get_table_client(table).list_entities()


def state_documents(entities: Iterable[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Every key's state document, keys sorted: compared whole, alerts' event ids included. A later row of
    a key wins (a tombstone holds the state when its move did not finish; a fence holds none)."""
    return {(row["PartitionKey"], row["RowKey"]): orjson.dumps(orjson.loads(decode_state(row).to_json()),
                                                               option=orjson.OPT_SORT_KEYS).decode()
            for row in entities if row["RowKey"] != LEARNING_ROW and "state" in row}


def alert_rows(entities: Iterable[dict[str, Any]]) -> dict[str, bytes]:
    """Every alert row, all its properties (`event_ids` included), by alert id."""
    return {row["PartitionKey"]: orjson.dumps({name: row[name] for name in sorted(row)}) for row in entities}


def _compare(label: str, clean: Mapping[Key, object], faulty: Mapping[Key, object], found: list[str]) -> None:
    """Add a line to `found` when the two runs differ."""
    keys = sorted((key for key in clean.keys() | faulty.keys() if clean.get(key) != faulty.get(key)), key=str)
    if keys:
        found.append(f"{len(keys)} {label} differ, e.g. {keys[0]}:\n    clean  {clean.get(keys[0])!r}"
                     f"\n    faulty {faulty.get(keys[0])!r}")


def differences(clean: RunResult, faulty: RunResult) -> list[str]:
    """What differs between the runs: must be nothing."""
    found: list[str] = []
    _compare("state entities", clean.state, faulty.state, found)
    _compare("alert rows", clean.alert_rows, faulty.alert_rows, found)
    if set(faulty.published_alerts) != set(clean.published_alerts):
        found.append("published alerts differ")
    if (faulty.records_in, faulty.events_out, faulty.dead_letters) != (clean.records_in, clean.events_out,
                                                                       clean.dead_letters):
        found.append("normalize counts differ")
    if faulty.records_in != faulty.events_out + faulty.dead_letters:
        found.append("records in != events out + dead letters")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--crash", type=float, default=0.05, help="chance that a batch meets a failure")
    parser.add_argument("--rewind", type=float, default=0.03, help="chance that a checkpoint is lost")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--connection-string", help="an Azurite to use (default: start a throw-away one)")
    args = parser.parse_args()
    raw = generate(args.events, args.seed)
    with tempfile.TemporaryDirectory() as data:
        instance = None if args.connection_string else azurite.start(Path(data))
        connection = args.connection_string or (instance.connection_string if instance else "")
        try:
            suffix = f"{args.seed}{int(time.time())}"
            clean = run(raw, args.partitions, connection, f"c{suffix}", Plan(args.seed))
            faulty = run(raw, args.partitions, connection, f"f{suffix}", Plan(args.seed, args.crash, args.rewind))
        finally:
            if instance:
                instance.stop()
    print(f"soak: {args.events:,} records in {args.partitions} partitions (processes), Azurite on 127.0.0.1")
    for label, result in (("clean", clean), ("faulty", faulty)):
        largest = max((len(document) for document in result.state.values()), default=0)
        print(f"{label:>7}: {result.records_in:,} in = {result.events_out:,} out + {result.dead_letters:,} dead; "
              f"{len(result.state):,} state entities (largest {largest:,} characters), "
              f"{len(result.alert_rows):,} alerts, "
              f"{result.failures:,} failed batches, {result.rewinds:,} lost checkpoints, {result.seconds:,.0f} s")
    repeated = sum(count - 1 for count in faulty.published_alerts.values())
    print(f"alerts published more than once in the faulty run: {repeated}")
    found = differences(clean, faulty)
    print("faulty run equals clean run" if not found else "DIFFERENCES:\n  " + "\n  ".join(found))
    raise SystemExit(1 if found else 0)


if __name__ == "__main__":
    main()
