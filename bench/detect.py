"""detect throughput with the default rule pack, and Table transactions per 1,000 events (the bill).

Events are completed deletes in the production subscription, so every one reaches the stateful
delete-spike rule and the inventory aggregate (the production detector shape: state, alerts and
inventory tables); the number of distinct callers (its group key) is 1, 100 or 10,000. Batches of 100
(host.json's maxEventBatchSize) on one partition, built beforehand by the host's converter (the worker
decodes them before the function runs), state in a throw-away Azurite started here. Transactions are
counted per HTTP request through the SDK's response hook; events/s is bound by Azurite's latency.

Baselines measured in the same run: the naive design (one read-modify-write per event: batches of one
event, no entity cache) and matching alone (every rule's selection, no state).
Target: at most 2 transactions per touched key per batch (the inventory aggregate is one more key); with
one key and batches of 100, at most 40 per 1,000 events (20 with entities and ETags cached between batches).
Matching with a large pack (`--large-pack`, no Azurite): the default pack, one rule per operation of the
operation catalog up to 160 more, and SigmaHQ's conformance rules when ../shared is present, over the
normalized samples. Before: every rule of the event's log source tried on every event (as detect did
before the rule index); after: only the rules the index returns. Same run, same events, ratio printed.
Run: `.venv/bin/python bench/detect.py [--events N] [--large-pack]`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from azure.data.tables import TableServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.cli import azurite
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import Position, bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.detect.engine import RULES_DIR, Detector, DetectReport, build_detector, detect_batch
from shared.detect.rules import Rule, load_rules
from shared.detect.rules.fields import field_map
from shared.detect.rules.index import RuleIndex
from shared.normalize.batch import normalize_bodies
from shared.normalized_event import FIELD_NAMES

BATCH = 100
REPO = Path(__file__).resolve().parent.parent
SIGMA_RULES = REPO.parent / "shared" / "conformance" / "sigma" / "rules"  # absent on a user's clone
PRODUCTION = "a1b2c3d4-1111-4111-8111-000000000001"
START = datetime(2026, 11, 27, tzinfo=UTC)


class Counter:
    def __init__(self) -> None:
        self.requests = 0

    def __call__(self, response: Any) -> None:
        self.requests += 1


def deletes(count: int, keys: int) -> list[bytes]:
    events = []
    for number in range(count):
        event: dict[str, Any] = dict.fromkeys(FIELD_NAMES)
        event.update(event_id=f"bench-{number}", source="activity", category="Administrative",
                     time=(START + timedelta(seconds=number)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     operation="MICROSOFT.COMPUTE/SNAPSHOTS/DELETE", common_event="Object Deleted/Removed",
                     action="delete", result="Success", severity="Informational",
                     actor=f"caller-{number % keys}@contoso.example", subscription_id=PRODUCTION,
                     resource_name=f"snap-{number}")
        events.append(orjson.dumps(event))
    return events


@dataclass
class Measured:
    events: int
    seconds: float
    requests: int
    keys_touched: int
    alerts: int

    @property
    def per_thousand(self) -> float:
        return self.requests * 1000 / self.events

    @property
    def per_key_batch(self) -> float:
        return self.requests / max(self.keys_touched, 1)


def measure(rules: list[Rule], connection: str, bodies: Sequence[bytes], *, batch: int, cache: bool,
            table: str) -> Measured:
    counter = Counter()
    service = TableServiceClient.from_connection_string(connection, raw_response_hook=counter)
    detector = build_detector(rules, service, state_table=f"s{table}", alerts_table=f"a{table}",
                              publisher=InProcessPublisher(), alerts_hub="alerts",
                              dead_letters=InMemoryDeadLetterStore(), inventory=f"i{table}")
    if not cache:
        detector.state.cache_entries = 0
    _warm_up(detector)
    batches = [bodies_with_positions(trigger_batch(list(bodies[first:first + batch]), "0", first_sequence=first))
               for first in range(0, len(bodies), batch)]
    counter.requests = 0
    started = time.perf_counter()
    reports: list[DetectReport] = [detect_batch(events, detector) for events in batches]
    return Measured(len(bodies), time.perf_counter() - started, counter.requests,
                    sum(report.keys_touched for report in reports), sum(len(report.alerts) for report in reports))


def _warm_up(detector: Detector) -> None:
    """Create the tables (once per process in a function app: not part of the per-event bill)."""
    detect_batch([], detector)
    detector.alerts.stage("warm-up")
    detector.state.store.read("warm-up", "warm-up")


def matching_only(rules: list[Rule], bodies: Sequence[bytes]) -> float:
    """Decoding and matching as detect does them (the rules the index returns), without state."""
    index = RuleIndex.of([rule for rule in rules if not (rule.silent and not rule.members)])
    started = time.perf_counter()
    for body in bodies:
        event = orjson.loads(body)
        for rule in index.candidates(event):
            rule.matching(event)
    return len(bodies) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5_000, help="events per scenario (at least the keys)")
    parser.add_argument("--uncached-events", type=int, default=2_000, help="events of the no-cache runs")
    parser.add_argument("--naive-events", type=int, default=1_000)
    parser.add_argument("--large-pack", action="store_true", help="only the matching figures of a 150+ rule pack")
    args = parser.parse_args()
    if args.large_pack:
        large_pack_matching(args.events)
        return
    pack = load_rules(RULES_DIR)
    if pack.errors:
        raise SystemExit("\n".join(map(str, pack.errors)))
    with tempfile.TemporaryDirectory() as data:
        instance = azurite.start(Path(data))
        try:
            report(pack.rules, instance.connection_string, args.events, args.uncached_events, args.naive_events)
        finally:
            instance.stop()


def report(rules: list[Rule], connection: str, count: int, uncached_count: int, naive_count: int) -> None:
    print(f"detect: {len(rules)} rules (default pack), batches of {BATCH}, one partition, Azurite on 127.0.0.1")
    print(f"{'distinct keys':>13} {'events':>7} {'events/s':>9} {'tx/1000 ev':>11} {'tx/key/batch':>13} "
          f"{'no cache: tx/1000':>18} {'tx/key/batch':>13} {'alerts':>7}")
    results: dict[int, Measured] = {}
    for keys in (1, 100, 10_000):
        bodies = deletes(max(count, keys), keys)
        cached = measure(rules, connection, bodies, batch=BATCH, cache=True, table=f"c{keys}")
        uncached = measure(rules, connection, bodies[:max(uncached_count, min(keys, len(bodies)))], batch=BATCH,
                           cache=False, table=f"u{keys}")
        results[keys] = cached
        print(f"{keys:>13,} {cached.events:>7,} {cached.events / cached.seconds:>9,.0f} {cached.per_thousand:>11,.1f} "
              f"{cached.per_key_batch:>13.2f} {uncached.per_thousand:>18,.1f} {uncached.per_key_batch:>13.2f} "
              f"{cached.alerts:>7}")
    naive = measure(rules, connection, deletes(naive_count, 1), batch=1, cache=False, table="naive")
    matching = matching_only(rules, deletes(count, 100))
    print(f"\nbaseline, naive (one read-modify-write per event, no cache): {naive.per_thousand:,.0f} tx/1000 events, "
          f"{naive.events / naive.seconds:,.0f} events/s")
    print(f"baseline, matching only (no state, no I/O): {matching:,.0f} events/s")
    print(f"{'distinct keys':>13} {'tx vs naive':>12} {'events/s vs naive':>18} {'events/s vs matching only':>26}")
    for keys, measured in results.items():
        print(f"{keys:>13,} {measured.per_thousand / naive.per_thousand:>12.3f} "
              f"{(measured.events / measured.seconds) / (naive.events / naive.seconds):>18.1f} "
              f"{(measured.events / measured.seconds) / matching:>26.3f}")


SYNTHETIC_RULES = 160
LARGE_PACK_REPEATS = 20


def large_pack() -> list[Rule]:
    """The default pack, one match rule per catalog operation (most real rules test one operation), and
    SigmaHQ's conformance rules when present: what a team's deployment grows into."""
    operations = sorted(orjson.loads((REPO / "shared/normalize/data/operations.json").read_bytes())["operations"])
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "rules"
        shutil.copytree(RULES_DIR, folder)
        for number, operation in enumerate(operations[:SYNTHETIC_RULES]):
            (folder / f"synthetic-{number}.yaml").write_text(
                f"title: Synthetic {number}\nname: synthetic-{number}\nid: {uuid.uuid4()}\nlevel: low\n"
                f"logsource: {{product: azure}}\ndetection:\n  sel: {{operation: {orjson.dumps(operation).decode()}, "
                "result: Success}\n  condition: sel\n")
        rules = load_rules(folder).rules
    if SIGMA_RULES.is_dir():
        rules.extend(load_rules(SIGMA_RULES, ("stable", "test", "experimental", "deprecated", "unsupported")).rules)
    return [rule for rule in rules if not (rule.silent and not rule.members)]  # inputs run inside correlations


def sample_events() -> list[dict[str, Any]]:
    paths = sorted((REPO / "samples").rglob("*.json"))
    bodies = [(path.read_bytes(), Position("0", index)) for index, path in enumerate(paths)]
    return [orjson.loads(output.body) for output in normalize_bodies(bodies, include_raw=True).events]


def large_pack_matching(count: int) -> None:
    rules = large_pack()
    events = (sample_events() * (count // 200 + 1))[:max(count, 1)]
    index = RuleIndex.of(rules)
    services = field_map().services

    def every_rule(event: dict[str, Any]) -> list[Rule]:  # before: each rule of the event's log source
        return [rule for rule in rules if rule.service is None or services[rule.service].routes(event)]

    figures = {}
    for name, candidates in (("before: every rule", every_rule), ("after: rule index", index.candidates)):
        best, tried, matched = float("inf"), 0, 0
        for _ in range(3):  # best of three: the machine is shared
            started = time.perf_counter()
            tried = matched = 0
            for event in events:
                chosen = candidates(event)
                tried += len(chosen)
                matched += sum(1 for rule in chosen if rule.matching(event))
            best = min(best, time.perf_counter() - started)
        figures[name] = (len(events) / best, tried / len(events), matched)
    print(f"matching: {len(rules)} rules ({sum(rule.requirements is not None for rule in rules)} indexed), "
          f"{len(events):,} normalized sample events, one core, no state")
    print(f"{'':<20} {'events/s':>10} {'rules tried/event':>18} {'matches':>8}")
    for name, (rate, per_event, matched) in figures.items():
        print(f"{name:<20} {rate:>10,.0f} {per_event:>18.1f} {matched:>8,}")
    before, after = figures["before: every rule"], figures["after: rule index"]
    print(f"ratio after/before: {after[0] / before[0]:.1f}x events/s, same matches: {before[2] == after[2]}")


if __name__ == "__main__":
    main()
