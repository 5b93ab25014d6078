"""Scale figures (issue 19), each beside a baseline measured in the same run; the five result lines keep
their words across versions so the figures can be compared.

1. Partition spread: a synthetic day (one large tenant whose 50,000 users' sign-ins and audit events are
   a third of all events, the rest Activity Log over 300 subscriptions) normalized by the real code and
   routed to 32 partitions by its partition keys (a stable hash stands for Event Hubs'). Baseline: the
   same events keyed by subscription or tenant, as before the change.
2. detect's Table requests per 1,000 events and events/s, one instance (the production detector: state,
   alerts and inventory tables in a throw-away Azurite, every request counted on the wire), batches of
   100: the soak's mixed day, and the adversarial stream where every event is a failed sign-in from a
   new IP for a new user (three new state keys per event), also with the day tables' clock a minute after
   a partition's turn, when yesterday's table is read and fenced there. Events are normalized beforehand.
3. Housekeeping: the hourly run once the adversarial run's day tables have no reader left (2.5 days on)
   removes every state entity that run created, per second, against the entities it created per second.
   Short-lived rules keep state in day tables, dropped whole (`shared.detect.day_tables`).
4. Cold start: `import function_app` in a fresh interpreter (the median of 7, alternating) against
   `import azure.functions, orjson`, the floor any function app pays.
Run: `.venv/bin/python bench/scale.py [--events N]` (also run by `make bench`).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from azure.data.tables import TableServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soak import generate

from shared.cli import azurite
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import Position
from shared.clients.publisher import InProcessPublisher
from shared.detect.day_tables import CLOCK_SKEW, LAST_TURN, TURN_STEP
from shared.detect.engine import RULES_DIR, Detector, build_detector, detect_batch
from shared.detect.rules import Rule, load_rules
from shared.detect.state import DAILY_HORIZON
from shared.normalize.batch import normalize_bodies

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 32
BATCH = 100
TENANT = "72f988bf-0000-4000-8000-000000000001"
START = datetime(2026, 11, 27, tzinfo=UTC)
SAMPLES = REPO / "samples"


def _record(relative: str, index: int = 0) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads((SAMPLES / relative).read_bytes())["records"][index]
    return record


def _sign_in(number: int, user: str, address: str, failed: bool) -> bytes:
    record = _record("attack/password-spray.json") if failed else _record("signin/noninteractive.json")
    moment = (START + timedelta(milliseconds=number * 50)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    record["time"] = moment
    record["properties"].update(id=f"scale-{number}", createdDateTime=moment, userPrincipalName=user,
                                ipAddress=address)
    record["callerIpAddress"] = address
    return orjson.dumps({"records": [record]})


def synthetic_day(count: int) -> list[bytes]:
    """A third sign-ins and audit of one tenant's 50,000 users, the rest activity of 300 subscriptions."""
    activity = _record("activity/ordinary-day.json")
    audit = _record("audit/user-created.json")
    bodies = []
    for number in range(count):
        if number % 3 == 0:
            user = f"user-{(number * 7919) % 50_000}@contoso.example"
            if number % 30 == 0:
                record = orjson.loads(orjson.dumps(audit))
                record["properties"]["initiatedBy"]["user"]["userPrincipalName"] = user
                record["properties"]["id"] = f"scale-audit-{number}"
                bodies.append(orjson.dumps({"records": [record]}))
            else:
                bodies.append(_sign_in(number, user, f"203.0.{number % 250}.{number % 200}", failed=False))
            continue
        record = orjson.loads(orjson.dumps(activity))
        subscription = f"50a50a50-0000-4000-8000-{(number * 31) % 300:012d}"
        record["resourceId"] = record["resourceId"].replace(record["resourceId"].split("/")[2], subscription)
        record["properties"] = {**record.get("properties", {}), "eventDataId": f"scale-{number}"}
        bodies.append(orjson.dumps({"records": [record]}))
    return bodies


def partition_of(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS


def spread(count: int) -> None:
    result = normalize_bodies([(body, Position("0", n)) for n, body in enumerate(synthetic_day(count))])
    events = [(output.partition_key, orjson.loads(output.body)) for output in result.events]
    tenant_share = sum(event["tenant_id"] == TENANT and event["source"] in ("signin", "audit")
                       for _, event in events) / len(events)
    now = Counter(partition_of(key) for key, _ in events)
    before = Counter(partition_of(event["subscription_id"] or event["tenant_id"] or "unknown") for _, event in events)
    mean = len(events) / PARTITIONS
    print(f"busiest partition share: {100 * max(now.values()) / len(events):.1f}% of events "
          f"({PARTITIONS} partitions, one large tenant)")
    print(f"   {len(events):,} events, the tenant's sign-ins and audit {100 * tenant_share:.0f}%; busiest "
          f"{max(now.values()) / mean:.2f}x the mean; baseline (tenant-wide key): "
          f"{100 * max(before.values()) / len(events):.1f}%, {max(before.values()) / mean:.2f}x the mean")


class Requests:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, response: Any) -> None:
        self.count += 1


def normalized(bodies: Sequence[bytes]) -> list[bytes]:
    result = normalize_bodies([(body, Position("0", n)) for n, body in enumerate(bodies)], include_raw=False)
    return [output.body for output in result.events]


def adversarial(count: int) -> list[bytes]:
    """Every event a failed sign-in from a new IP for a new user: two new state keys per event."""
    return normalized([_sign_in(n, f"victim-{n}@contoso.example", f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
                                failed=True) for n in range(count)])


def production_detector(rules: list[Rule], connection: str, name: str, counter: Requests) -> Detector:
    service = TableServiceClient.from_connection_string(connection, raw_response_hook=counter)
    detector = build_detector(rules, service, state_table=f"s{name}", alerts_table=f"a{name}",
                              publisher=InProcessPublisher(), alerts_hub="alerts",
                              dead_letters=InMemoryDeadLetterStore(), inventory=f"i{name}")
    detect_batch([], detector)  # creates the tables: once per process, not per event
    detector.alerts.stage("warm-up")
    detector.state.store.read("warm-up", "warm-up")
    return detector


def detect_run(detector: Detector, events: Sequence[bytes], counter: Requests) -> tuple[float, float]:
    """(requests per 1,000 events, seconds) of detect over `events` in batches on one partition."""
    now = datetime.now(UTC)
    batches = [[(body, Position("0", first + n, str(first + n), now)) for n, body in
                enumerate(events[first:first + BATCH])] for first in range(0, len(events), BATCH)]
    counter.count = 0
    started = time.perf_counter()
    for batch in batches:
        detect_batch(batch, detector)
    return counter.count * 1000 / len(events), time.perf_counter() - started


def state_entities(detector: Detector) -> int:
    """Entities of the state table and its day tables (tombstones and fences included: all are created)."""
    state = detector.state
    permanent = sum(1 for _ in state.store.written_before(None, datetime.now(UTC) + timedelta(days=1)))
    return permanent + (0 if state.days is None else state.days.count([name for name, _ in state.days.tables()]))


def just_after_a_turn(now: datetime) -> datetime:
    """A minute after the next partition of the day tables turns its day: the costliest moment of a flood."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + ((now - midnight) // TURN_STEP + 1) * TURN_STEP + timedelta(minutes=1)


def detect_figures(rules: list[Rule], connection: str, mixed_count: int, flood_count: int) -> None:
    mixed_counter, flood_counter = Requests(), Requests()
    mixed = normalized(generate(mixed_count, seed=19))
    mixed_requests, mixed_seconds = detect_run(production_detector(rules, connection, "mixed", mixed_counter),
                                               mixed, mixed_counter)
    flood = production_detector(rules, connection, "flood", flood_counter)
    flood_requests, flood_seconds = detect_run(flood, adversarial(flood_count), flood_counter)
    mixed_rate, flood_rate = len(mixed) / mixed_seconds, flood_count / flood_seconds
    created = state_entities(flood)
    creations = created / flood_seconds
    print(f"table requests per 1k events: mixed {mixed_requests:,.0f}, adversarial {flood_requests:,.0f}")
    print(f"detect events/s (Azurite): mixed {mixed_rate:,.0f}, adversarial {flood_rate:,.0f}")
    turn_counter = Requests()
    at_turn = production_detector(rules, connection, "turn", turn_counter)
    assert at_turn.state.days is not None
    shift = just_after_a_turn(datetime.now(UTC)) - datetime.now(UTC)
    at_turn.state.days.clock = lambda: datetime.now(UTC) + shift
    turn_requests, turn_seconds = detect_run(at_turn, adversarial(flood_count), turn_counter)
    print(f"   adversarial a minute after a day-table partition's turn (yesterday read and fenced there): "
          f"{flood_count / turn_seconds:,.0f} events/s, {turn_requests:,.0f} requests per 1k events")
    # The hourly run once the flood's day tables have no reader left, before orphans are 30 days old.
    later = datetime.now(UTC) + timedelta(days=1) + LAST_TURN + DAILY_HORIZON + 2 * CLOCK_SKEW + timedelta(days=1)
    started = time.perf_counter()
    done = flood.state.housekeep(rules, later)
    seconds = time.perf_counter() - started
    deleted = created - state_entities(flood)
    assert not done.deleted, "the flood's rules keep their state in day tables"
    housekeeping = deleted / seconds
    print(f"housekeeping deletes/s: {housekeeping:,.0f} vs creations/s under flood: {creations:,.0f}")
    print(f"   {len(mixed):,} mixed and {flood_count:,} adversarial events; {created:,} state entities created, "
          f"{deleted:,} removed ({len(done.dropped)} day tables dropped): {housekeeping / creations:.1f}x the rate "
          f"of creation")


def cold_import(runs: int = 7) -> None:
    """Medians of alternating runs, so that a busy moment of the machine weighs on both figures alike."""
    def seconds(code: str) -> float:
        command = [sys.executable, "-c", f"import time; t = time.perf_counter(); {code}; "
                   "print(time.perf_counter() - t)"]
        out = subprocess.run(command, cwd=REPO, capture_output=True, check=True,  # noqa: S603 - this interpreter
                             timeout=120)
        return float(out.stdout)

    app, floor = [], []
    for _ in range(runs):
        app.append(seconds("import function_app"))
        floor.append(seconds("import azure.functions, orjson"))
    print(f"cold import: {statistics.median(app) * 1000:,.0f} ms (floor {statistics.median(floor) * 1000:,.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="events of the synthetic day (partitions)")
    parser.add_argument("--mixed", type=int, default=10_000, help="raw records of the mixed detect run")
    parser.add_argument("--adversarial", type=int, default=5_000, help="events of the adversarial detect run")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # every batch logs a line for Application Insights: not wanted here
    spread(args.events)
    rules = load_rules(RULES_DIR).rules
    with tempfile.TemporaryDirectory() as data:
        instance = azurite.start(Path(data))
        try:
            detect_figures(rules, instance.connection_string, args.mixed, args.adversarial)
        finally:
            instance.stop()
    cold_import()


if __name__ == "__main__":
    main()
