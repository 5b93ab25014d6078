"""The outbox: one row per (alert, route) in Table Storage, the delivery's state across restarts.

PartitionKey = alert id, RowKey = route name, so routing an alert twice (a crash before it was marked
routed, two drains at once) finds the row already there and adds nothing. A drain *claims* a due row
by moving its next attempt past the send's timeout with an ETag match before it sends: a second drain
reading the same row loses the race (412) and skips it, and a drain that dies mid-send leaves the row
to come due again after the claim runs out. The receiver gets the alert id as idempotency key for the
one case left (sent, then died before recording it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.clients.storage import OwnTable
from shared.http_errors import InputError
from shared.values import for_log

log = logging.getLogger("stormwatch.delivery")
DeliveryStatus = Literal["pending", "delivered", "failed"]
MAX_ERROR_CHARS = 1000


class Delivery(BaseModel):
    """One alert's delivery through one route."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    alert_id: str = Field(validation_alias="PartitionKey")
    route: str = Field(validation_alias="RowKey")
    destination: str = Field(description="webhook/teams, log_analytics, ...: what it was routed to")
    status: DeliveryStatus = "pending"
    attempts: int = 0
    next_attempt: AwareDatetime
    last_error: str | None = None
    delivered_at: AwareDatetime | None = None
    updated_at: AwareDatetime


def _rows(entities: Iterable[TableEntity]) -> Iterator[tuple[Delivery, TableEntity]]:
    """Each row as a Delivery with its entity; a row edited into something else is logged and skipped."""
    for entity in entities:
        try:
            yield Delivery.model_validate(entity), entity
        except ValidationError:
            log.warning("outbox row %s/%s unreadable: skipped", for_log(str(entity.get("PartitionKey"))),
                        for_log(str(entity.get("RowKey"))))


class Claimed(BaseModel):
    delivery: Delivery
    etag: str


def _entity(delivery: Delivery) -> dict[str, Any]:
    fields = delivery.model_dump(exclude={"alert_id", "route"})
    return {"PartitionKey": delivery.alert_id, "RowKey": delivery.route,
            **{name: value for name, value in fields.items() if value is not None}}


def _time_filter(moment: datetime) -> str:
    return f"datetime'{moment.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z'"


class Outbox(OwnTable):
    def add(self, alert_id: str, route: str, destination: str, now: datetime) -> bool:
        """A pending row, due now; False when the row exists already (whatever its state)."""
        self.ensure_table()
        row = Delivery.model_validate({"PartitionKey": alert_id, "RowKey": route, "destination": destination,
                                       "next_attempt": now, "updated_at": now})
        try:
            self.table.create_entity(_entity(row))
        except ResourceExistsError:
            return False
        return True

    def due(self, now: datetime, limit: int) -> Iterator[Claimed]:
        """Pending rows whose next attempt has come, oldest first within a page."""
        self.ensure_table()
        query = f"status eq 'pending' and next_attempt le {_time_filter(now)}"
        entities = self.table.query_entities(query, results_per_page=min(limit, 1000))
        for count, (delivery, entity) in enumerate(_rows(entities)):
            if count >= limit:
                return
            yield Claimed(delivery=delivery, etag=str(entity.metadata["etag"]))

    def claim(self, claimed: Claimed, until: datetime) -> Claimed | None:
        """The row held until `until` (its next attempt moved there), or None if another drain changed it."""
        held = claimed.delivery.model_copy(update={"next_attempt": until})
        try:
            answer = self.table.update_entity(_entity(held), mode=UpdateMode.MERGE, etag=claimed.etag,
                                               match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return Claimed(delivery=held, etag=answer["etag"])

    def record(self, claimed: Claimed, outcome: Delivery) -> None:
        """The attempt's outcome, written over the claimed row (REPLACE: a cleared error stays cleared)."""
        # another drain took it after our claim ran out, or someone deleted the row meanwhile
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            self.table.update_entity(_entity(outcome), mode=UpdateMode.REPLACE, etag=claimed.etag,
                                      match_condition=MatchConditions.IfNotModified)

    def of_alert(self, alert_id: str) -> list[Delivery]:
        self.ensure_table()
        return [row for row, _ in _rows(self.table.query_entities("PartitionKey eq @id", parameters={"id": alert_id}))]

    def failed(self, limit: int) -> list[Delivery]:
        self.ensure_table()
        entities = self.table.query_entities("status eq 'failed'", results_per_page=min(limit, 1000))
        rows = [row for row, _ in _rows(entities)]
        return sorted(rows, key=lambda row: row.updated_at, reverse=True)[:limit]

    def retry(self, alert_id: str, route: str | None, now: datetime) -> list[Delivery]:
        """Failed deliveries of the alert (one route, or all) made pending and due now, attempts reset."""
        rows = [row for row in self.of_alert(alert_id) if route is None or row.route == route]
        if not rows:
            raise InputError(f"no delivery of alert {alert_id}" + (f" through route {route}" if route else ""),
                             status=404)
        retried = []
        for row in rows:
            if row.status != "failed":
                continue
            again = row.model_copy(update={"status": "pending", "attempts": 0, "next_attempt": now,
                                           "last_error": row.last_error, "updated_at": now})
            self.table.upsert_entity(_entity(again), mode=UpdateMode.REPLACE)
            retried.append(again)
        return retried

    def forget_delivered(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` rows delivered before `before`: the table stays as small as what is still
        owed (failed rows stay until retried). Their alerts are routed already and stay so."""
        self.ensure_table()
        query = f"status eq 'delivered' and delivered_at lt {_time_filter(before)}"
        rows = self.table.query_entities(query, select=["PartitionKey", "RowKey"], results_per_page=min(limit, 1000))
        deleted = 0
        for row in rows:
            if deleted >= limit:
                break
            self.table.delete_entity(row["PartitionKey"], row["RowKey"])
            deleted += 1
        return deleted


def backoff(attempts: int, first: float, cap: float) -> timedelta:
    """The wait after the `attempts`-th failed attempt: first, 2×first, 4×first, … up to cap."""
    return timedelta(seconds=min(cap, first * 2 ** max(0, attempts - 1)))
