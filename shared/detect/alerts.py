"""Alerts: the contract, deterministic ids, the readable summary, and where alerts are kept.

An alert id is a hash of (rule, group key, what raised it), so the same incident computed twice —
after a redelivery or by two instances — is the same row. `emit_alerts` stores each alert *before*
publishing it, marked unpublished, and marks it published afterwards: a retry publishes only what
is stored and not yet marked, so an alert reaches the hub once (twice only if the process dies between
the publish and the mark). The saved row is marked not yet routed: delivery to webhooks and Log
Analytics starts from that mark, on its own timer, so detection never waits on a destination. Record
values copied into an alert are cut with a visible marker, so a row always fits Table Storage's 64 KiB per property.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from shared.clients.publisher import OutgoingEvent, Publisher
from shared.clients.storage import OwnTable, is_outage
from shared.detect.rules.model import Severity
from shared.detect.rules.rule import MAX_EVENT_IDS
from shared.detect.rules.sigma import compile_path
from shared.values import format_time

ALERT_ROW_KEY = "alert"
PUBLISHED = "published"
# False on every alert saved from now on: delivery (shared.delivery) routes it later, off the detection path.
ROUTED = "routed"
# True (with `routed` True) on an alert routed while routes.yaml had an error: it went only to the routes that
# loaded, named in ROUTED_THROUGH (a JSON list), and is routed again once the file loads cleanly. Rows saved
# by earlier releases have neither column: not partly routed.
ROUTED_PARTLY = "routed_partly"
ROUTED_THROUGH = "routed_through"
# What raised the alert, for delivery's context (shared.delivery.context): the raising event's
# who/what/where, and the request body of its operation when the batch holds it (the Start stage of
# an Activity Log operation carries the body; later stages share its correlation id).
SUBJECT = "subject"
SUBJECT_FIELDS = ("event_id", "source", "operation", "result", "actor", "source_ip", "resource_id",
                  "subscription_id", "correlation_id", "alert_id")
SUBJECT_CHARS = 16_000
# Each field's cut: even with every character escaped (6 each) the ten fit one 32,767-character property.
SUBJECT_FIELD_CHARS = 500
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_UNKNOWN = "(unknown)"
# Cuts of record-derived text in an alert. Even as JSON with every character escaped (6 each), the
# group and the event ids stay well inside one 32,767-character Table property.
SUMMARY_CHARS = 4_000
GROUP_CHARS = 4_000  # shared by the group's values
EVENT_ID_CHARS = 256
Stage = Literal["absent", "saved", "published"]


class Alert(BaseModel):
    """One incident raised by one rule for one group key (`time` is event time, not arrival)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: str
    rule_id: str
    title: str
    severity: Severity
    time: AwareDatetime = Field(description="When it fired: the event time that completed the condition")
    group: dict[str, str | None] = Field(description="The group-by values (and first_seen's new values)")
    count: int = Field(description="Events (threshold, match) or distinct values (distinct) in the window")
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    event_ids: list[str] = Field(description=f"A sample of at most {MAX_EVENT_IDS} contributing events")
    summary: str = Field(description="One sentence naming who, what and where")
    # From the rule's Sigma metadata (optional: alerts stored before these existed read as empty).
    tags: list[str] = Field(default_factory=list, description="ATT&CK tactics and technique ids (attack.t1078)")
    references: list[str] = Field(default_factory=list)
    falsepositives: list[str] = Field(default_factory=list)
    author: str = ""
    # Which release raised it: an analyst comparing alerts across an upgrade knows which rules and mappers ran.
    stormwatch_version: str = Field(default="",
                                    description="The Stormwatch version that raised it (empty: before 0.2.0)")

    @field_serializer("time", "first_seen", "last_seen")
    def _iso(self, moment: datetime) -> str:
        return format_time(moment)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def alert_id(rule_id: str, key: str, raised_by: str) -> str:
    """Deterministic: the same rule, key and raising event (or window) always give the same id."""
    return hashlib.sha256(f"{rule_id}\x1f{key}\x1f{raised_by}".encode()).hexdigest()[:32]


def render_summary(template: str | None, title: str, facts: Mapping[str, Any],
                   event: Mapping[str, Any]) -> str:
    """Fill `{placeholders}` from the alert's facts (count, group values), then from the event.

    `{a|b}` takes the first of a, b that has a value (sources name the same thing differently).
    """
    if template is None:
        return default_summary(title, event)

    def value(match: re.Match[str]) -> str:
        for name in match.group(1).split("|"):
            if facts.get(name) is not None:
                return str(facts[name])
            found = [item for item in compile_path(name)(event) if item not in (None, "")]
            if found:
                return ", ".join(str(item) for item in found[:3])
        return _UNKNOWN

    return _PLACEHOLDER.sub(value, template)


def default_summary(title: str, event: Mapping[str, Any]) -> str:
    """Who did what where, from the normalized fields every source fills in."""
    who = event.get("actor") or event.get("actor_app_id") or event.get("source_ip") or _UNKNOWN
    what = (event.get("operation_description") or event.get("alert_name") or event.get("operation")
            or event.get("common_event") or _UNKNOWN)
    scope = event.get("subscription_id") or event.get("tenant_id")
    where = event.get("resource_name") or event.get("resource_id") or scope or _UNKNOWN
    if scope and scope != where:
        where = f"{where} ({scope})"
    return f"{title}: {who} — {what} — {where}"


def truncated(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut made visible: `…[truncated 39,000 chars]`."""
    if len(text) <= limit:
        return text
    kept = max(0, limit - 40)  # room for the marker
    return f"{text[:kept]}…[truncated {len(text) - kept:,} chars]"


def bounded(alert: Alert) -> Alert:
    """The alert with its record-derived text cut to fit one Table row (ids and counts unchanged)."""
    per_value = max(64, GROUP_CHARS // max(1, len(alert.group)))
    return alert.model_copy(update={
        "title": truncated(alert.title, SUMMARY_CHARS), "summary": truncated(alert.summary, SUMMARY_CHARS),
        "group": {name: None if value is None else truncated(value, per_value) for name, value in alert.group.items()},
        "event_ids": [truncated(event_id, EVENT_ID_CHARS) for event_id in alert.event_ids]})


class AlertStore(Protocol):
    def stage(self, alert_id: str) -> Stage:
        """absent; saved (stored, not yet published); or published."""

    def save(self, alert: Alert, subject: Mapping[str, Any] | None = None) -> None:
        """Upsert by alert id, marked not yet published (and not yet routed), with what raised it."""

    def mark_published(self, alert_id: str) -> None:
        """Record that the stored alert went out."""


class TableAlertStore(OwnTable):
    """The `alerts` table: PartitionKey = alert id (point reads by id), RowKey = `alert`."""

    def stage(self, alert_id: str) -> Stage:
        self.ensure_table()
        try:
            row = self.table.get_entity(alert_id, ALERT_ROW_KEY, select=["PartitionKey", PUBLISHED])
        except ResourceNotFoundError:
            return "absent"
        return "saved" if row.get(PUBLISHED) is False else "published"  # rows from before the mark: published

    def save(self, alert: Alert, subject: Mapping[str, Any] | None = None) -> None:
        self.ensure_table()
        extra = {SUBJECT: orjson.dumps(subject).decode()} if subject else {}
        self.table.upsert_entity({**alert_entity(alert), PUBLISHED: False, ROUTED: False, **extra},
                                  mode=UpdateMode.REPLACE)

    def mark_published(self, alert_id: str) -> None:
        self.table.upsert_entity({"PartitionKey": alert_id, "RowKey": ALERT_ROW_KEY, PUBLISHED: True},
                                  mode=UpdateMode.MERGE)

    def get(self, alert_id: str) -> Alert | None:
        self.ensure_table()
        try:
            return alert_from_entity(self.table.get_entity(alert_id, ALERT_ROW_KEY))
        except ResourceNotFoundError:
            return None


def alert_entity(alert: Alert) -> dict[str, Any]:
    """Flat, readable properties (Storage Explorer, enrich_fn); lists and maps as JSON text."""
    fields = alert.model_dump(mode="json")
    return {"PartitionKey": alert.alert_id, "RowKey": ALERT_ROW_KEY, **fields,
            **{name: orjson.dumps(fields[name]).decode() for name in _JSON_FIELDS}}


_JSON_FIELDS = ("group", "event_ids", "tags", "references", "falsepositives")


def alert_from_entity(entity: Mapping[str, Any]) -> Alert:
    values: dict[str, Any] = {name: entity[name] for name in Alert.model_fields if entity.get(name) is not None}
    for name in _JSON_FIELDS:
        if name in values:
            values[name] = orjson.loads(values[name])
    return Alert.model_validate({"group": {}, "event_ids": [], **values})


class MemoryAlertStore:
    """Alerts kept in process (`rules test`): the same contract as the table."""

    def __init__(self) -> None:
        self.alerts: dict[str, Alert] = {}
        self.published: set[str] = set()

    def stage(self, alert_id: str) -> Stage:
        return "published" if alert_id in self.published else "saved" if alert_id in self.alerts else "absent"

    def save(self, alert: Alert, subject: Mapping[str, Any] | None = None) -> None:
        self.alerts[alert.alert_id] = alert

    def mark_published(self, alert_id: str) -> None:
        self.published.add(alert_id)


class Emitted(NamedTuple):
    """What `emit_alerts` did: the alerts published now, and those storage refused (with why)."""

    published: list[Alert]
    rejected: list[tuple[Alert, str]]


def subject_of(event: Mapping[str, Any], batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The raising event's who/what/where, bounded; its operation's request body from the event or
    from an event of the batch with the same correlation id (the Start stage)."""
    subject: dict[str, Any] = {name: truncated(str(event[name]), SUBJECT_FIELD_CHARS)
                               for name in SUBJECT_FIELDS if event.get(name)}
    correlation = event.get("correlation_id")
    for candidate in (event, *(other for other in batch if correlation and other.get("correlation_id") == correlation)):
        details = candidate.get("details")
        body = details.get("request_body") if isinstance(details, Mapping) else None
        if body:
            subject["request_body"] = body
            break
    if len(orjson.dumps(subject)) > SUBJECT_CHARS:
        subject.pop("request_body", None)
        subject["request_body_dropped"] = True  # too large for the row: delivery reads ARM instead
    return subject


def subjects_of(alerts: Sequence[Alert], events: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each alert's subject from the latest of its events in the batch (none for alerts raised earlier)."""
    by_id = {event.get("event_id"): event for event in events}
    subjects = {}
    for alert in alerts:
        raising = [by_id[event_id] for event_id in alert.event_ids if event_id in by_id]
        if raising:
            subjects[alert.alert_id] = subject_of(raising[-1], events)
    return subjects


def emit_alerts(alerts: Sequence[Alert], store: AlertStore, publisher: Publisher, hub: str,
                subjects: Mapping[str, Mapping[str, Any]] | None = None) -> Emitted:
    """Store, then publish, then mark published the alerts not published yet, in order.

    Only an outage raises. An alert storage rejects for what it holds (a 4xx) is still published,
    and comes back in `rejected` for the caller to dead-letter: a retry could never store it.
    """
    unique = [bounded(alert) for alert in {alert.alert_id: alert for alert in alerts}.values()]
    stages = {alert.alert_id: store.stage(alert.alert_id) for alert in unique}
    rejected: list[tuple[Alert, str]] = []
    for alert in unique:
        if stages[alert.alert_id] == "absent":
            try:
                store.save(alert, (subjects or {}).get(alert.alert_id))
            except Exception as error:
                if is_outage(error):
                    raise
                rejected.append((alert, f"alert not stored: {type(error).__name__}: {error}"[:1000]))
    due = [alert for alert in unique if stages[alert.alert_id] != "published"]
    if due:
        publisher.publish(hub, [OutgoingEvent(alert.rule_id, alert.to_json()) for alert in due])
    refused = {alert.alert_id for alert, _ in rejected}
    for alert in due:
        if alert.alert_id not in refused:
            store.mark_published(alert.alert_id)
    return Emitted(due, rejected)
