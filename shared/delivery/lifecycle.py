"""An alert's life after it is raised: who owns it and where it stands (new, acknowledged, closed with a
reason, false positive). Kept on the alert's own row in the `alerts` table, beside the delivery mark.

The alert itself (what detection computed) is never rewritten here: status columns are merged onto the
row, so a redelivered batch that finds the alert stored leaves its status alone.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, NamedTuple

import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.clients.storage import OwnTable
from shared.detect.alerts import ALERT_ROW_KEY, ROUTED, ROUTED_PARTLY, ROUTED_THROUGH, SUBJECT, Alert, alert_from_entity
from shared.http_errors import InputError
from shared.values import for_log, format_time

log = logging.getLogger("stormwatch.delivery")
AlertStatus = Literal["new", "acknowledged", "closed", "false_positive"]
STATUSES: tuple[AlertStatus, ...] = ("new", "acknowledged", "closed", "false_positive")
ALERT_ID = re.compile(r"^[0-9a-f]{32}$")
# Row columns; `status_` prefixed so they can never collide with an Alert field.
_COLUMNS = {"status": "status", "owner": "status_owner", "reason": "status_reason", "changed_by": "status_by",
            "changed_at": "status_at"}


class Lifecycle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: AlertStatus = "new"
    owner: str | None = None
    reason: str | None = Field(default=None, description="Why it was closed or called a false positive")
    changed_by: str | None = Field(default=None,
                                   description="Who set the status (the Entra ID caller, or 'function key')")
    changed_at: AwareDatetime | None = None


class StatusChange(BaseModel):
    """Body of `POST /api/alerts/{id}/status` (and what the CLI sends)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: AlertStatus
    owner: str | None = Field(default=None, min_length=1, max_length=200)
    reason: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _closing_says_why(self) -> StatusChange:
        if self.status in ("closed", "false_positive") and not self.reason:
            raise ValueError(f"a reason is required to set {self.status}")
        return self


class StoredAlert(NamedTuple):
    alert: Alert
    lifecycle: Lifecycle
    routed: bool | None  # None: saved before delivery existed (never routed)
    subject: dict[str, Any] | None = None  # what raised it (shared.detect.alerts.subject_of)
    # Routed while routes.yaml was broken: the routes it reached then (routed again once the file is fixed).
    partly_routed: frozenset[str] | None = None

    def as_json(self) -> dict[str, Any]:
        return {**self.alert.model_dump(mode="json"), "lifecycle": self.lifecycle.model_dump(mode="json"),
                "routed": self.routed, "routed_partly": self.partly_routed is not None}


def check_alert_id(alert_id: str) -> str:
    if not ALERT_ID.match(alert_id):
        raise InputError("not a Stormwatch alert id: 32 lower-case hex characters")
    return alert_id


def lifecycle_of(entity: Mapping[str, Any]) -> Lifecycle:
    values = {field: entity[column] for field, column in _COLUMNS.items() if entity.get(column) not in (None, "")}
    try:
        return Lifecycle.model_validate(values)
    except ValueError:  # a row edited by hand: show it as new rather than fail the whole listing
        return Lifecycle()


def readable(entity: Mapping[str, Any]) -> StoredAlert | None:
    """The row as a StoredAlert, or None (logged) for a row no alert can be read from (edited by hand)."""
    try:
        return stored_alert(entity)
    except ValueError as error:  # pydantic's ValidationError and orjson's decode error are ValueErrors
        log.warning("alert row %s unreadable: %s", for_log(str(entity.get("PartitionKey"))),
                    type(error).__name__)
        return None


def stored_alert(entity: Mapping[str, Any]) -> StoredAlert:
    routed = entity.get(ROUTED)
    subject = None
    if isinstance(entity.get(SUBJECT), str):
        with contextlib.suppress(orjson.JSONDecodeError):
            subject = orjson.loads(entity[SUBJECT])
    return StoredAlert(alert_from_entity(entity), lifecycle_of(entity), routed if isinstance(routed, bool) else None,
                       subject if isinstance(subject, dict) else None, partly_routed_of(entity))


def partly_routed_of(entity: Mapping[str, Any]) -> frozenset[str] | None:
    """The routes an alert reached while routes.yaml was broken; None when it is not partly routed (rows of
    earlier releases). A list edited into garbage reads as none reached: routing again adds what exists."""
    if entity.get(ROUTED_PARTLY) is not True:
        return None
    names: object = None
    if isinstance(entity.get(ROUTED_THROUGH), str):
        with contextlib.suppress(orjson.JSONDecodeError):
            names = orjson.loads(entity[ROUTED_THROUGH])
    return frozenset(name for name in names if isinstance(name, str)) if isinstance(names, list) else frozenset()


class AlertRows(OwnTable):
    """The `alerts` table as delivery and the lifecycle read it (detection writes it: shared.detect.alerts)."""

    def get(self, alert_id: str) -> StoredAlert | None:
        self.ensure_table()
        try:
            return readable(self.table.get_entity(alert_id, ALERT_ROW_KEY))
        except ResourceNotFoundError:
            return None

    def unrouted(self, limit: int) -> list[StoredAlert]:
        """Alerts saved but not routed yet (a filtered scan: alerts are few, and this runs once a minute)."""
        return self._scan(f"{ROUTED} eq false", limit)

    def partly_routed(self, limit: int) -> list[StoredAlert]:
        """Alerts routed while routes.yaml was broken, to be routed again against the fixed file."""
        return self._scan(f"{ROUTED_PARTLY} eq true", limit)

    def count_partly_routed(self, limit: int) -> int:
        """How many alerts wait for a fixed routes.yaml, counted up to `limit` (keys only: a bounded read)."""
        self.ensure_table()
        rows = self.table.query_entities(f"{ROUTED_PARTLY} eq true", select=["PartitionKey"],
                                         results_per_page=min(limit, 1000))
        count = 0
        for _ in rows:
            count += 1
            if count >= limit:
                break
        return count

    def _scan(self, query: str, limit: int) -> list[StoredAlert]:
        self.ensure_table()
        found: list[StoredAlert] = []
        for entity in self.table.query_entities(query, results_per_page=min(limit, 1000)):
            stored = readable(entity)
            if stored is not None:
                found.append(stored)
            if len(found) >= limit:
                break
        return found

    def mark_routed(self, alert_id: str) -> None:
        """Routed through every route of a clean routes.yaml: no run routes it again."""
        # Table Storage drops None on a merge: an empty string clears the list.
        self.table.update_entity({"PartitionKey": alert_id, "RowKey": ALERT_ROW_KEY, ROUTED: True,
                                  ROUTED_PARTLY: False, ROUTED_THROUGH: ""}, mode=UpdateMode.MERGE)

    def mark_partly_routed(self, alert_id: str, routes: Iterable[str]) -> None:
        """Routed through the routes that loaded from a broken routes.yaml: out of the new alerts' scan, so
        later alerts get their turn, and routed again (minus `routes`) once the file loads cleanly."""
        self.table.update_entity({"PartitionKey": alert_id, "RowKey": ALERT_ROW_KEY, ROUTED: True,
                                  ROUTED_PARTLY: True, ROUTED_THROUGH: orjson.dumps(sorted(routes)).decode()},
                                 mode=UpdateMode.MERGE)

    def recent(self, limit: int, status: AlertStatus | None = None) -> list[StoredAlert]:
        """The latest alerts by event time, optionally of one status (a scan, like `unrouted`)."""
        self.ensure_table()
        rows = [stored for entity in self.table.list_entities() if (stored := readable(entity)) is not None]
        if status is not None:
            rows = [row for row in rows if row.lifecycle.status == status]
        return sorted(rows, key=lambda row: (row.alert.time, row.alert.alert_id), reverse=True)[:limit]

    def set_status(self, alert_id: str, change: StatusChange, by: str, now: datetime) -> StoredAlert:
        """Merge the new status onto the row; 404 when there is no such alert. The owner stays unless given."""
        current = self.get(alert_id)
        if current is None:
            raise InputError(f"no alert {alert_id}", status=404)
        owner = change.owner if change.owner is not None else current.lifecycle.owner
        lifecycle = Lifecycle(status=change.status, owner=owner, reason=change.reason, changed_by=by,
                              changed_at=now)
        # Table Storage drops None on a merge: an empty string clears a column (read back as None).
        columns = {column: getattr(lifecycle, field) or "" for field, column in _COLUMNS.items()}
        columns["status_at"] = format_time(now)
        self.table.update_entity({"PartitionKey": alert_id, "RowKey": ALERT_ROW_KEY, **columns},
                                  mode=UpdateMode.MERGE)
        return current._replace(lifecycle=lifecycle)
