"""Alerts: the contract, deterministic ids, the readable summary, and where alerts are kept.

An alert id is a hash of (rule, group key, what raised it), so the same incident computed twice —
after a redelivery or by two instances — is the same row. `emit_alerts` writes each alert once:
it publishes to the alerts hub *before* storing the row, so a row in the table proves the alert went
out, and a crash in between at worst publishes it again (the hub is at-least-once anyway).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from shared.clients.publisher import OutgoingEvent, Publisher
from shared.detect.rules.model import Severity
from shared.detect.rules.rule import MAX_EVENT_IDS
from shared.detect.rules.sigma import compile_path
from shared.values import format_time

ALERT_ROW_KEY = "alert"
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_UNKNOWN = "(unknown)"


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


class AlertStore(Protocol):
    def exists(self, alert_id: str) -> bool:
        """True when the alert was already stored (and therefore already published)."""

    def save(self, alert: Alert) -> None:
        """Upsert by alert id."""


class TableAlertStore:
    """The `alerts` table: PartitionKey = alert id (point reads by id), RowKey = `alert`."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._ready = False

    def ensure_table(self) -> None:
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self._table.create_table()
            self._ready = True

    def exists(self, alert_id: str) -> bool:
        self.ensure_table()
        try:
            self._table.get_entity(alert_id, ALERT_ROW_KEY, select=["PartitionKey"])
        except ResourceNotFoundError:
            return False
        return True

    def save(self, alert: Alert) -> None:
        self.ensure_table()
        self._table.upsert_entity(alert_entity(alert), mode=UpdateMode.REPLACE)

    def clear(self) -> int:
        """Delete every alert (`replay --fresh`, the demo)."""
        self.ensure_table()
        rows = list(self._table.list_entities(select=["PartitionKey", "RowKey"]))
        for row in rows:
            self._table.delete_entity(row["PartitionKey"], row["RowKey"])
        return len(rows)

    def get(self, alert_id: str) -> Alert | None:
        self.ensure_table()
        try:
            return alert_from_entity(self._table.get_entity(alert_id, ALERT_ROW_KEY))
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

    def exists(self, alert_id: str) -> bool:
        return alert_id in self.alerts

    def save(self, alert: Alert) -> None:
        self.alerts[alert.alert_id] = alert


def emit_alerts(alerts: Sequence[Alert], store: AlertStore, publisher: Publisher, hub: str) -> list[Alert]:
    """Publish and store the alerts not stored yet; return those (the new ones), in order."""
    unique = list({alert.alert_id: alert for alert in alerts}.values())
    new = [alert for alert in unique if not store.exists(alert.alert_id)]
    if new:
        publisher.publish(hub, [OutgoingEvent(alert.rule_id, alert.to_json()) for alert in new])
    for alert in new:
        store.save(alert)
    return new
