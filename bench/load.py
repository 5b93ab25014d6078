"""Load figures of the local pipeline, each beside a baseline measured in the same run.

1. Sustained events/s of normalize + detect in one Python process (one core; Azurite, a separate
   Node process, answers the Table requests), over the soak's skewed stream, in host-sized batches.
   Baseline: the same code with state and alerts in memory (what Table Storage round trips cost).
2. Memory peak of normalize over one batch of 1,000 bodies of 1 MB each (tracemalloc: allocations
   made during the batch, the bodies themselves excluded). Baseline: `orjson.loads` + `orjson.dumps`
   of the same bodies, one at a time (no normalizer can allocate less).
3. End-to-end latency from enqueue to alert: a batch whose last delete completes a spike is enqueued,
   normalized, published in process, detected, and the alert stored; measured per trial with fresh
   keys. Baseline: the same with in-memory state. Event Hubs delivery and the host's batching wait
   (host.json maxWaitTime, up to 5 s) come on top in Azure and are not measured here.
Run: `.venv/bin/python bench/load.py [--events N] [--trials N]`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
from azure.data.tables import TableServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soak import generate

from shared.cli import azurite
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import Position
from shared.clients.publisher import InProcessPublisher
from shared.detect.alerts import MemoryAlertStore
from shared.detect.engine import RULES_DIR, Detector, build_detector, detect_batch
from shared.detect.rules import Rule, load_rules
from shared.detect.state import MemoryEntityStore, StateTable
from shared.normalize.batch import process_batch
from shared.settings import Settings

BATCH = 100
SETTINGS = Settings()
DELETE_SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "attack" / "delete-spike.json"


def positioned(bodies: Sequence[bytes], partition: str, first: int = 0) -> list[tuple[bytes, Position]]:
    now = datetime.now(UTC)
    return [(body, Position(partition, first + index, str(first + index), now)) for index, body in enumerate(bodies)]


def detector_for(rules: list[Rule], connection: str | None, name: str) -> Detector:
    """The production detector shape in Azurite (`connection`: state, alerts and inventory tables), or the
    in-memory stores of the same contract (None: no inventory)."""
    if connection is None:
        return Detector(rules=rules, state=StateTable(MemoryEntityStore(lambda: datetime.now(UTC))),
                        alerts=MemoryAlertStore(), publisher=InProcessPublisher(), alerts_hub="alerts",
                        dead_letters=InMemoryDeadLetterStore())
    detector = build_detector(rules, TableServiceClient.from_connection_string(connection), state_table=f"ls{name}",
                              alerts_table=f"la{name}", publisher=InProcessPublisher(), alerts_hub="alerts",
                              dead_letters=InMemoryDeadLetterStore(), inventory=f"li{name}")
    detect_batch([], detector)  # creates the tables: once per process in a function app, not per batch
    return detector


def pipeline(raw: Sequence[bytes], detector: Detector, partition: str = "0") -> int:
    """normalize then detect, batch by batch as the host delivers them; returns the new alerts."""
    publisher, letters, alerts = InProcessPublisher(), InMemoryDeadLetterStore(), 0
    for first in range(0, len(raw), BATCH):
        process_batch(positioned(raw[first:first + BATCH], partition, first), publisher, letters, SETTINGS)
        normalized = [event.body for event in publisher.hubs.pop(SETTINGS.normalized_hub, [])]
        alerts += len(detect_batch(positioned(normalized, partition, first), detector).alerts)
    return alerts


def throughput(rules: list[Rule], connection: str, events: int) -> None:
    raw = generate(events, seed=11)
    print(f"1. sustained normalize + detect, one process, {events:,} records, {len(rules)} rules, batches of {BATCH}")
    for label, target in (("Table Storage (Azurite)", connection), ("baseline: state in memory", None)):
        detector = detector_for(rules, target, f"t{time.time_ns()}")
        started = time.perf_counter()
        alerts = pipeline(raw, detector)
        seconds = time.perf_counter() - started
        print(f"   {label:<28} {events / seconds:>8,.0f} events/s  ({seconds:,.1f} s, {alerts} alerts)")


def big_bodies(count: int, size: int) -> list[bytes]:
    """Activity Log records of about `size` bytes: a delete whose responseBody carries the bulk."""
    record = orjson.loads(DELETE_SAMPLE.read_bytes())["records"][1]
    padding = size - len(orjson.dumps({"records": [record]})) - 64
    bodies = []
    for number in range(count):
        record["properties"] = {**record.get("properties", {}), "eventDataId": f"big-{number}",
                                "responseBody": "x" * padding}
        bodies.append(orjson.dumps({"records": [record]}))
    return bodies


def peak_mb(work: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def memory(count: int, size: int) -> None:
    bodies = big_bodies(count, size)
    batch = positioned(bodies, "0")
    total = sum(map(len, bodies)) / 1e6
    print(f"2. memory peak, one normalize batch of {count:,} bodies of {size / 1e6:.1f} MB ({total:,.0f} MB in)")
    published = InProcessPublisher()
    normalize = peak_mb(lambda: process_batch(batch, published, InMemoryDeadLetterStore(), SETTINGS))
    floor = peak_mb(lambda: sum(len(orjson.dumps(orjson.loads(body))) for body in bodies))
    out = sum(len(event.body) for event in published.hubs[SETTINGS.normalized_hub]) / 1e6
    print(f"   normalize (raw dropped above 1 MB)  {normalize:>8,.0f} MB peak  ({out:,.1f} MB published)")
    print(f"   baseline: orjson loads+dumps        {floor:>8,.0f} MB peak")


def latency(rules: list[Rule], connection: str, trials: int) -> None:
    spike = orjson.loads(DELETE_SAMPLE.read_bytes())["records"]
    print(f"3. enqueue → alert stored, {trials} trials of one batch (90 ordinary records + 10 completing deletes)")
    raw = generate(90, seed=3)
    for label, target in (("Table Storage (Azurite)", connection), ("baseline: state in memory", None)):
        detector = detector_for(rules, target, f"l{time.time_ns()}")
        measured = []
        for trial in range(trials):
            deletes = []
            for number, record in enumerate(record for record in spike if record["resultType"] == "Success"):
                text = orjson.dumps(record).decode().replace("de910e00-0000-4000-8000-00000000a991",
                                                             f"1a7e0000-0000-4000-8000-{trial:012d}")
                copy = orjson.loads(text)
                copy["properties"]["eventDataId"] = f"latency-{trial}-{number}"
                deletes.append(orjson.dumps({"records": [copy]}))
            bodies = [*raw, *deletes[:10]]
            enqueued = time.perf_counter()
            alerts = pipeline(bodies, detector, partition=f"l{trial}")
            if alerts:
                measured.append((time.perf_counter() - enqueued) * 1000)
        if not measured:
            print(f"   {label:<28} no alert raised")
            continue
        print(f"   {label:<28} p50 {statistics.median(measured):>6.1f} ms  "
              f"max {max(measured):>6.1f} ms  ({len(measured)} alerts)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--big", type=int, default=1_000, help="bodies in the memory batch")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # every batch logs a line for Application Insights: not wanted here
    rules = load_rules(RULES_DIR).rules
    with tempfile.TemporaryDirectory() as data:
        instance = azurite.start(Path(data))
        try:
            throughput(rules, instance.connection_string, args.events)
            memory(args.big, 1_000_000)
            latency(rules, instance.connection_string, args.trials)
        finally:
            instance.stop()


if __name__ == "__main__":
    main()
