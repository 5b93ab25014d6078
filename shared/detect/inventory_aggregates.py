"""Inventory aggregates: what normal looks like, per subscription and per UTC day. Pure functions.

One aggregate per (subscription, day) counts a batch's events by source, resource type, resource
group, region, caller, operation and result, plus deletes, errors, sign-in failures and alerts.
It rides in a `KeyState` subclass so `shared.detect.state.StateTable` does the one read-modify-write per
touched aggregate per batch (ETag, cache, retries) and `KeyState.watermarks` gives the same exactness
as rule state: per source partition the highest sequence applied; items at or below it are skipped.

Alerts count on the subscription and day of the event that raised them (the newest, by position, of
their `event_ids` in the batch), so a redelivered batch re-derives the same attribution and the
watermark skips it. Counters are bounded: the top `TOP_N` values by count, the rest in `OTHER`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson

from shared.clients.eventhubs import Position
from shared.detect.alerts import Alert
from shared.detect.rules.aggregate import KeyState, Transition, from_us
from shared.detect.state import StateKey, table_key
from shared.values import format_time

DIMENSIONS = ("source", "resource_type", "resource_group", "region", "actor", "operation", "result")
# Azure compares these case-insensitively and logs mix cases (RG-PROD-WEB, rg-prod-web): count them as one.
FOLDED = frozenset({"resource_type", "resource_group", "region", "actor", "operation"})
TOTALS = ("events", "deletes", "errors", "signin_failures", "alerts")
TOP_N = 20  # named values kept per counter and day: bounded entity whatever a tenant sends
LATEST_ALERTS = 10
OTHER = "(other)"
NONE = "(none)"
TENANT = "tenant"  # Entra ID sign-ins and audit carry no subscription: they count under the tenant
VALUE_CHARS = 128


class Positioned(Protocol):
    """A decoded event with its position on the input partition (`shared.detect.engine.Decoded`)."""

    @property
    def event(self) -> dict[str, Any]: ...

    @property
    def time_us(self) -> int: ...

    @property
    def position(self) -> Position: ...


class Item(NamedTuple):
    """One event, or one alert it raised, bound for one aggregate at one position."""

    sequence: int
    event: Mapping[str, Any]
    alert: Alert | None = None


@dataclass
class InventoryState(KeyState):
    """The watermarks of KeyState plus one day's counts for one subscription."""

    totals: dict[str, int] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    latest_alerts: list[dict[str, Any]] = field(default_factory=list)

    def copy(self) -> InventoryState:
        return InventoryState(watermarks=dict(self.watermarks), totals=dict(self.totals),
                              counters={name: dict(values) for name, values in self.counters.items()},
                              latest_alerts=list(self.latest_alerts))

    def to_json(self) -> str:
        return orjson.dumps({"watermarks": self.watermarks, "totals": self.totals, "counters": self.counters,
                             "latest_alerts": self.latest_alerts}).decode()

    @classmethod
    def from_json(cls, text: str) -> InventoryState:
        data = orjson.loads(text)
        return cls(watermarks=data["watermarks"], totals=data["totals"], counters=data["counters"],
                   latest_alerts=data["latest_alerts"])


def aggregate_key(event: Mapping[str, Any], time_us: int) -> StateKey:
    """PartitionKey = subscription (range reads per subscription), RowKey = the event's UTC day.

    The subscription comes from the record, so it is made a valid key (`table_key`): a `#` or 600
    characters in it must not make the write fail on every retry.
    """
    subscription = event.get("subscription_id") or TENANT
    return StateKey(table_key(str(subscription)), from_us(time_us).strftime("%Y-%m-%d"))


def batch_items(events: Sequence[Positioned], alerts: Iterable[Alert]) -> dict[StateKey, list[Item]]:
    """Group a batch's events, and the alerts they raised, by the aggregate they count in."""
    touched: dict[StateKey, list[Item]] = {}
    raisers: dict[str, tuple[StateKey, int, Mapping[str, Any]]] = {}
    for decoded in events:
        key = aggregate_key(decoded.event, decoded.time_us)
        sequence = _sequence(decoded.position)
        touched.setdefault(key, []).append(Item(sequence, decoded.event))
        raisers[decoded.event["event_id"]] = key, sequence, decoded.event
    for alert in {alert.alert_id: alert for alert in alerts}.values():
        found = [raisers[event_id] for event_id in alert.event_ids if event_id in raisers]
        if found:
            key, sequence, event = max(found, key=lambda raiser: raiser[1])
            touched[key].append(Item(sequence, event, alert))
    return touched


def _sequence(position: Position) -> int:
    return -1 if position.sequence_number is None else position.sequence_number


def advance_inventory(before: KeyState | None, partition: str, items: Sequence[Item]) -> Transition:
    """Count the items above this partition's watermark; None state when all were applied already."""
    state = before.copy() if isinstance(before, InventoryState) else InventoryState()
    mark = state.watermarks.get(partition, -1)
    fresh = [item for item in items if item.sequence > mark or item.sequence < 0]
    transition = Transition(state=None, redelivered=len(items) - len(fresh))
    if not fresh:
        return transition
    state.watermarks[partition] = max(mark, *(item.sequence for item in fresh))
    totals, counters = Counter(state.totals), {name: Counter(state.counters.get(name, {})) for name in DIMENSIONS}
    for item in fresh:
        if item.alert is not None:
            totals["alerts"] += 1
            _remember_alert(state, item.alert, item.event)
            continue
        totals.update(facts_of(item.event))
        for name in DIMENSIONS:
            counters[name][_value(item.event.get(name), folded=name in FOLDED)] += 1
    state.totals = {name: totals[name] for name in TOTALS}
    state.counters = {name: bounded(counter, TOP_N) for name, counter in counters.items()}
    transition.state, transition.applied = state, len(fresh)
    return transition


def facts_of(event: Mapping[str, Any]) -> dict[str, int]:
    """The totals one event adds: deletes count once per completed operation (its Success record)."""
    result = str(event.get("result") or "").lower()
    return {"events": 1,
            "deletes": int(event.get("action") == "delete" and result == "success"),
            "errors": int(event.get("severity") in ("Error", "Critical")),
            "signin_failures": int(event.get("source") == "signin" and result == "failure")}


def _value(value: Any, *, folded: bool) -> str:
    if value in (None, ""):
        return NONE
    text = str(value)[:VALUE_CHARS]
    return text.lower() if folded else text


def bounded(counts: Mapping[str, int], top: int) -> dict[str, int]:
    """The `top` largest named counts (ties by name); the rest summed into OTHER. Totals are kept."""
    named = sorted(((name, count) for name, count in counts.items() if name != OTHER and count),
                   key=lambda pair: (-pair[1], pair[0]))
    other = counts.get(OTHER, 0) + sum(count for _, count in named[top:])
    return dict(named[:top]) | ({OTHER: other} if other else {})


def _remember_alert(state: InventoryState, alert: Alert, event: Mapping[str, Any]) -> None:
    """Keep the newest alerts with what the dashboard links to (its enrichment entry points)."""
    entry = {"alert_id": alert.alert_id, "time": format_time(alert.time), "rule_id": alert.rule_id,
             "severity": alert.severity, "title": alert.title, "summary": alert.summary[:300],
             "defender_alert": event.get("alert_id"), "resource_id": event.get("resource_id"),
             "source_ip": event.get("source_ip"), "operation": event.get("operation")}
    kept = [known for known in state.latest_alerts if known["alert_id"] != alert.alert_id] + [entry]
    state.latest_alerts = sorted(kept, key=lambda known: (known["time"], known["alert_id"]))[-LATEST_ALERTS:]


@dataclass
class Summary:
    """Aggregates of a subscription set and date range merged for one answer (the API, the dashboard)."""

    days: dict[str, dict[str, int]]  # day → totals
    subscriptions: dict[str, int]  # subscription → events
    top: dict[str, dict[str, int]]  # dimension → bounded counts
    totals: dict[str, int]
    latest_alerts: list[dict[str, Any]]


def summarize(aggregates: Iterable[tuple[StateKey, InventoryState]], top: int) -> Summary:
    days: dict[str, Counter[str]] = {}
    subscriptions, totals = Counter[str](), Counter[str]()
    counters = {name: Counter[str]() for name in DIMENSIONS}
    alerts: list[dict[str, Any]] = []
    for (subscription, day), state in aggregates:
        days.setdefault(day, Counter()).update(state.totals)
        subscriptions[subscription] += state.totals.get("events", 0)
        totals.update(state.totals)
        for name in DIMENSIONS:
            counters[name].update(state.counters.get(name, {}))
        alerts.extend({**alert, "subscription": subscription} for alert in state.latest_alerts)
    alerts.sort(key=lambda alert: (alert["time"], alert["alert_id"]), reverse=True)
    return Summary(
        days={day: {name: counts.get(name, 0) for name in TOTALS} for day, counts in sorted(days.items())},
        subscriptions=bounded(subscriptions, top),
        top={name: bounded(counts, top) for name, counts in counters.items()},
        totals={name: totals.get(name, 0) for name in TOTALS}, latest_alerts=alerts[:LATEST_ALERTS])
