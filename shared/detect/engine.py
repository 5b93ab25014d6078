"""detect_fn's work: normalized events in → every rule evaluated → state updated → alerts out.

One batch comes from one partition, in sequence order. Matching is pure and in memory; the hits are
then grouped per (rule, group key) so each touched key costs one read-modify-write per batch, not one
per event (`shared.detect.state`). Alerts are emitted after the state writes (`shared.detect.alerts.emit_alerts`).

Failure policy (the trigger checkpoints even when the function throws): an event that is not a
normalized event is dead-lettered and the batch goes on; a rule that fails on one event is logged
and skipped; a state row or alert that storage rejects for what it holds (a 4xx) is dead-lettered;
only an outage (`shared.clients.storage.is_outage`) raises, so the retry policy redelivers the batch —
which the watermarks make harmless.

Time sanity: an event dated more than `FUTURE_SKEW` past its enqueued time (or past now, without one)
counts as of its enqueued time, so a forged 2099 cannot push a window out of reach or start a
suppression that silences a rule; the batch line reports it as `future_dated`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from azure.data.tables import TableServiceClient

from shared.clients import wiring
from shared.clients.dead_letters import DeadLetterStore
from shared.clients.eventhubs import Position, batch_lag_ms
from shared.clients.publisher import Publisher
from shared.clients.rule_store import BlobRuleStore
from shared.clients.storage import table_service
from shared.detect import day_tables
from shared.detect.alerts import Alert, AlertStore, Emitted, TableAlertStore, emit_alerts, subjects_of
from shared.detect.inventory_table import InventoryTable, inventory_table
from shared.detect.rule_source import LayeredRules, RuleSet
from shared.detect.rules.aggregate import Hit, KeyContext, Transition, advance, match_alert, to_us
from shared.detect.rules.index import RuleIndex
from shared.detect.rules.loader import UNKNOWN_SUBSCRIPTIONS, RulePack, load_rules
from shared.detect.rules.model import DEFAULT_STATUSES
from shared.detect.rules.rule import Rule, state_key
from shared.detect.state import Applied, Change, Housekept, StateKey, StateTable, describe_key
from shared.normalized_event import DeadLetter
from shared.settings import get_settings
from shared.values import for_log, parse_time

log = logging.getLogger("stormwatch.detect")

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
# How far past its enqueued time an event's own time may be (clock skew of the logging service).
FUTURE_SKEW = timedelta(hours=1)


@dataclass
class Detector:
    """The rules and the stores one process evaluates them with."""

    rules: list[Rule]
    state: StateTable
    alerts: AlertStore
    publisher: Publisher
    alerts_hub: str
    dead_letters: DeadLetterStore
    inventory: InventoryTable | None = None  # per-subscription, per-day aggregates (docs/dashboard.md)
    _index: tuple[list[Rule], RuleIndex] | None = None

    @property
    def index(self) -> RuleIndex:
        """The rules indexed by the values they require, rebuilt when the rules list was swapped."""
        if self._index is None or self._index[0] is not self.rules:
            self._index = self.rules, RuleIndex.of([rule for rule in self.rules
                                                    if not (rule.silent and not rule.members)])
        return self._index[1]


class Decoded(NamedTuple):
    event: dict[str, Any]
    time_us: int  # the event's time; its enqueued time when the event claims a time beyond FUTURE_SKEW
    position: Position
    future_dated: bool = False


@dataclass
class _KeyHits:
    rule: Rule
    key: StateKey
    group: dict[str, str | None]
    hits: list[Hit] = field(default_factory=list)


@dataclass(frozen=True)
class DetectReport:
    """What one batch did: logged as one structured line and returned to callers."""

    partition: str | None
    events_in: int
    dead_letters: int
    matched: dict[str, int]
    keys_touched: int
    alerts: list[Alert]
    alerts_repeated: int
    redelivered: int
    too_late: int
    future_dated: int  # events dated past FUTURE_SKEW, counted as of their enqueued time
    duplicates: int  # events seen before at another position (normalize re-published them): not counted
    rule_errors: int
    state_reads: int
    state_writes: int
    state_conflicts: int
    # State and inventory reads and writes, one lookup per distinct alert, a row and a mark per new alert (the
    # bill); not the creation of a table, once per process and table (a day table's on its first write).
    table_transactions: int
    duration_ms: float
    lag_ms: float | None  # processing time − oldest enqueued time: how far behind the hub detect is

    def as_log(self) -> str:
        fields = {name: value for name, value in self.__dict__.items() if name != "alerts"}
        return orjson.dumps({"function": "detect", **fields,
                             "alerts_new": [alert.alert_id for alert in self.alerts]}).decode()


def decode_events(bodies: Sequence[tuple[bytes, Position]]) -> tuple[list[Decoded], list[DeadLetter]]:
    """Bodies of the normalized hub → events with their time in µs; anything else is a dead letter."""
    events: list[Decoded] = []
    letters: list[DeadLetter] = []
    now = datetime.now(UTC)
    for body, position in bodies:
        try:
            event = orjson.loads(body)
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
            if not isinstance(event.get("event_id"), str) or not event["event_id"]:
                raise ValueError("no event_id")
            time_us, arrived_us = to_us(parse_time(event.get("time"))), to_us(position.enqueued_time or now)
            future = time_us > arrived_us + FUTURE_SKEW // timedelta(microseconds=1)
            events.append(Decoded(event, arrived_us if future else time_us, position, future))
        except ValueError as error:  # orjson.JSONDecodeError and MappingError are ValueErrors
            letters.append(_dead_letter(f"not a normalized event: {error}", body, position))
    return events, letters


def _dead_letter(reason: str, body: bytes, position: Position) -> DeadLetter:
    return DeadLetter(reason=reason[:1000], partition=position.partition, sequence_number=position.sequence_number,
                      offset=position.offset, enqueued_time=position.enqueued_time, record_index=None,
                      original=base64.b64encode(body).decode("ascii"))


def detect_batch(bodies: Sequence[tuple[bytes, Position]], detector: Detector) -> DetectReport:
    """Evaluate a batch; raise only on an outage of the state, alert or dead-letter store or the hub.

    Before an outage propagates (and the retry policy redelivers the batch) one structured line says so:
    the `detect-retry-loop` health alert counts these per partition to spot a stalled one.
    """
    try:
        return _evaluate_batch(bodies, detector)
    except Exception as error:
        log.warning(orjson.dumps({"function": "detect", "outcome": "retry",
                                  "partition": bodies[0][1].partition if bodies else None,
                                  "error": type(error).__name__}).decode())
        raise


def _evaluate_batch(bodies: Sequence[tuple[bytes, Position]], detector: Detector) -> DetectReport:
    started = time.perf_counter()
    partition = bodies[0][1].partition if bodies else None
    events, letters = decode_events(bodies)
    detector.dead_letters.write(letters)
    matched: Counter[str] = Counter()
    candidates: list[Alert] = []
    touched: dict[StateKey, _KeyHits] = {}
    rule_errors = 0
    index = detector.index  # silent inputs are left out: the correlations counting them hold their selection
    for decoded in events:
        try:
            rules = index.candidates(decoded.event)  # by log source and the values rules require
        except Exception:  # an event the index cannot read (a hand-made body): no rule sees it, the batch goes on
            rule_errors += 1
            log.exception("event %s not matched: the rule index cannot read it", for_log(decoded.event.get("event_id")))
            continue
        for rule in rules:
            try:
                members = rule.matching(decoded.event)
                if members:
                    matched[rule.id] += 1
                    # an event counts once, except towards each rule of a temporal correlation
                    for member in members if rule.kind.startswith("temporal") else members[:1]:
                        sequence = decoded.position.sequence_number
                        hit = Hit(decoded.time_us, decoded.event["event_id"], -1 if sequence is None else sequence,
                                  decoded.event, member)
                        _select(rule, hit, partition or "", candidates, touched, state=detector.state)
            except Exception:  # a rule must never sink the batch: the others still run
                rule_errors += 1
                log.exception("rule %s failed on event %s", rule.id, for_log(decoded.event.get("event_id")))
    applied, refused = _apply_levels(detector, touched, partition or "")
    for entry, result in applied:
        if not entry.rule.silent:
            candidates.extend(raised.alert for raised in result.transition.emitted)
    candidates.sort(key=lambda alert: (alert.time, alert.alert_id))
    subjects = subjects_of(candidates, [decoded.event for decoded in events])
    emitted = emit_alerts(candidates, detector.alerts, detector.publisher, detector.alerts_hub, subjects)
    rejected = _rejected_letters(refused, emitted, partition)
    detector.dead_letters.write(rejected)
    letters.extend(rejected)
    new = emitted.published
    inventory_requests = 0 if detector.inventory is None else \
        detector.inventory.record(events, candidates, partition or "")
    report = DetectReport(
        partition=partition, events_in=len(bodies), dead_letters=len(letters), matched=dict(matched),
        keys_touched=len(touched), alerts=new, alerts_repeated=len({a.alert_id for a in candidates}) - len(new),
        redelivered=sum(result.transition.redelivered for _, result in applied),
        too_late=sum(result.transition.too_late for _, result in applied),
        future_dated=sum(decoded.future_dated for decoded in events),
        duplicates=sum(result.transition.duplicates for _, result in applied),
        rule_errors=rule_errors + sum(result.failed for _, result in applied),
        state_reads=sum(result.reads for _, result in applied),
        state_writes=sum(result.writes for _, result in applied),
        state_conflicts=sum(result.conflicts for _, result in applied),
        table_transactions=sum(result.reads + result.writes for _, result in applied)
        + len({alert.alert_id for alert in candidates}) + 2 * len(new) + inventory_requests,
        duration_ms=round((time.perf_counter() - started) * 1000, 3), lag_ms=batch_lag_ms(bodies),
    )
    log.log(logging.WARNING if letters or rule_errors else logging.INFO, report.as_log())
    return report


def _select(rule: Rule, hit: Hit, partition: str, candidates: list[Alert],
            touched: dict[StateKey, _KeyHits], *, state: StateTable) -> None:
    event = hit.event
    group_values = rule.group_of(event, hit.member)
    if not rule.stateful:
        group = dict(zip(rule.group_by, group_values, strict=True))
        candidates.append(match_alert(KeyContext(rule, state_key(group_values), group, partition), hit))
        return
    values: tuple[str, ...] = ()
    if rule.kind == "first_seen":
        new_values = rule.new_values_of(event)
        if new_values is None:
            return  # nothing to call new
        values = new_values
    _touch(rule, hit, group_values, values, touched, state=state)


def _touch(rule: Rule, hit: Hit, group_values: tuple[str | None, ...], values: tuple[str, ...],
           touched: dict[StateKey, _KeyHits], *, state: StateTable) -> None:
    """Add a hit to its key's work for this batch (one read-modify-write per key)."""
    group = dict(zip(rule.group_by, group_values, strict=True))
    if values:
        group = {**group, **dict(zip(rule.new_value_names, values, strict=True))}
    key = state.key_of(rule, state_key(group_values, values))
    entry = touched.get(key)
    if entry is None:
        entry = touched[key] = _KeyHits(rule, key, group)
    entry.hits.append(hit)


def _apply_levels(detector: Detector, touched: dict[StateKey, _KeyHits],
                  partition: str) -> tuple[list[tuple[_KeyHits, Applied]], list[tuple[_KeyHits, str]]]:
    """Apply the keys level by level: a correlation's alerts become hits of the correlations that count
    them, applied in the next round. On a redelivery the alerts come back replayed, the same hits, which
    the next level's watermarks skip."""
    parents: dict[str, list[tuple[Rule, int]]] = {}
    for rule in detector.rules:
        for index, member in enumerate(rule.members):
            if member.rule is not None:
                parents.setdefault(member.rule.id, []).append((rule, index))
    applied: list[tuple[_KeyHits, Applied]] = []
    refused: list[tuple[_KeyHits, str]] = []
    for level in range(max((rule.level for rule in detector.rules), default=0) + 1):
        work = [entry for entry in touched.values() if entry.rule.level == level]
        results, rejected = _apply(detector, work, partition)
        refused.extend(rejected)
        for entry, result in zip(work, results, strict=True):
            applied.append((entry, result))
            counting = parents.get(entry.rule.id, [])  # the correlations that count this rule's alerts
            for raised in result.transition.emitted if counting else ():
                alert = raised.alert
                event = alert.model_dump(mode="json")  # the alert is the hit: its group and event ids
                for parent, index in counting:
                    hit = Hit(to_us(alert.time), alert.alert_id, raised.sequence, event, index)
                    _touch(parent, hit, parent.group_of(event, index), (), touched, state=detector.state)
    return applied, refused


def _apply(detector: Detector, touched: Iterable[_KeyHits],
           partition: str) -> tuple[list[Applied], list[tuple[_KeyHits, str]]]:
    """Each touched key's read-modify-write; also the keys whose write storage rejected, with why."""
    work = list(touched)
    refused: list[tuple[_KeyHits, str]] = []
    earliest: dict[str, tuple[Rule, int]] = {}
    for entry in work:
        if entry.rule.kind == "first_seen":
            first = min(hit.time_us for hit in entry.hits)
            known = earliest.get(entry.rule.id)
            earliest[entry.rule.id] = (entry.rule, first if known is None else min(known[1], first))
    learning_end = {rule_id: detector.state.learning_start(rule_id, first) + rule.learning_us
                    for rule_id, (rule, first) in earliest.items()}

    def change(entry: _KeyHits) -> Change:
        context = KeyContext(entry.rule, entry.key.group_hash, entry.group, partition,
                             learning_end.get(entry.rule.id))
        return Change(entry.key, describe_key(entry.rule, entry.group),
                      lambda before: advance(context, before, entry.hits),
                      detector.state.daily_horizon(entry.rule))

    applied: list[Applied] = []
    for entry, outcome in zip(work, detector.state.update_many([change(entry) for entry in work]), strict=True):
        if isinstance(outcome, Applied):
            applied.append(outcome)
            continue
        # a bug, an oversized state or a rejected row would otherwise hold the partition forever
        log.error("rule %s: state of key %s not updated, %d events not counted", entry.rule.id,
                  for_log(entry.key.row_key), len(entry.hits), exc_info=outcome)
        refused.append((entry, f"rule {entry.rule.id}: state not updated: {type(outcome).__name__}: {outcome}"))
        applied.append(Applied(Transition(state=None), failed=True))
    return applied, refused


def _rejected_letters(refused: list[tuple[_KeyHits, str]], emitted: Emitted,
                      partition: str | None) -> list[DeadLetter]:
    """Dead letters for what storage refused: each uncounted event of a key, each alert not stored."""
    letters = [_dead_letter(reason, orjson.dumps(hit.event),
                            Position(partition, None if hit.sequence < 0 else hit.sequence))
               for entry, reason in refused for hit in entry.hits]
    letters.extend(_dead_letter(reason, alert.to_json(), Position(partition)) for alert, reason in emitted.rejected)
    return letters


def housekeep(detector: Detector, now: datetime) -> Housekept:
    """Drop day tables and delete state entities whose rule's horizon has passed (the timer calls this; no
    TTL in Tables)."""
    done = detector.state.housekeep(detector.rules, now)
    log.info(orjson.dumps({"function": "housekeeping", "deleted": done.deleted, "dropped": done.dropped}).decode())
    return done


def load_pack(rules_dir: str | Path | None, statuses: Sequence[str] = DEFAULT_STATUSES,
              unknown_subscriptions: str = UNKNOWN_SUBSCRIPTIONS) -> RulePack:
    """Load the rules, logging each file that failed: one bad file never disables the others."""
    pack = load_rules(Path(rules_dir) if rules_dir else RULES_DIR, statuses, unknown_subscriptions)
    for error in pack.errors:
        log.error("rule file not loaded: %s", error)
    for skipped in pack.skipped:
        log.info("rule not run: %s", skipped)
    return pack


def build_detector(rules: list[Rule], service: TableServiceClient, *, state_table: str, alerts_table: str,
                   publisher: Publisher, alerts_hub: str, dead_letters: DeadLetterStore,
                   inventory: str | None = None) -> Detector:
    return Detector(rules=rules, state=day_tables.state_table(service, state_table),
                    alerts=TableAlertStore(service.get_table_client(alerts_table)), publisher=publisher,
                    alerts_hub=alerts_hub, dead_letters=dead_letters,
                    inventory=None if inventory is None else inventory_table(service, inventory))


_built: dict[str, tuple[tuple[object, ...], Detector]] = {}
_building = threading.Lock()
_layers: dict[str, tuple[tuple[object, ...], LayeredRules]] = {}
_layering = threading.Lock()


def detector() -> Detector:
    """This process's detector, rebuilt when the settings or clients it uses change (`wiring.reset()`),
    running the rules of the packaged folder and the rules container as of the last check."""
    settings = get_settings()
    publisher, dead_letters = wiring.publisher(), wiring.dead_letter_store()
    signature = (settings.state_table, settings.alerts_table, settings.inventory_table, settings.alerts_hub,
                 settings.storage_connection_string, settings.table_endpoint, id(publisher), id(dead_letters))
    rules = current_rules().pack.rules
    with _building:
        built = _built.get("current")
        if built is None or built[0] != signature:
            built = signature, build_detector(
                rules, table_service(settings), state_table=settings.state_table,
                alerts_table=settings.alerts_table, publisher=publisher, alerts_hub=settings.alerts_hub,
                dead_letters=dead_letters, inventory=settings.inventory_table)
            _built["current"] = built
        built[1].rules = rules
        return built[1]


def current_rules() -> RuleSet:
    """This process's rules and lists: the packaged folder with the rules container laid over it, checked
    again when due (README "Rules without a republish")."""
    settings = get_settings()
    signature = (settings.rules_dir, tuple(settings.rule_statuses), settings.unknown_subscriptions,
                 settings.rules_container, settings.rules_refresh_seconds, settings.storage_connection_string,
                 settings.blob_endpoint)
    with _layering:
        layered = _layers.get("current")
        if layered is None or layered[0] != signature:
            statuses, unknown = tuple(settings.rule_statuses), settings.unknown_subscriptions
            layered = signature, LayeredRules(
                Path(settings.rules_dir) if settings.rules_dir else RULES_DIR,
                BlobRuleStore(wiring.blob_client(), settings.rules_container),
                lambda folder: load_pack(folder, statuses, unknown), every=settings.rules_refresh_seconds)
            _layers["current"] = layered
    return layered[1].current()  # outside the lock: a check of the container never holds other batches
