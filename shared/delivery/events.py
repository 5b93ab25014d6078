"""Normalized events into Log Analytics (`StormwatchEvents_CL`), so analysts hunt over them with KQL long
after the hub's 7-day retention: delivery_fn's `events_export`, on its own consumer group of the
`normalized` hub, registered only when `STORMWATCH_EVENTS_STREAM` names the stream (infra sets it with
`keepEventsInLogAnalytics=true`).

At least once: a batch the Logs Ingestion API does not take for a reason a retry can outlast (429, 5xx,
no connection, access) raises, and the function's retry policy sends the batch again, so rows of a batch
that got halfway may arrive twice (KQL: `summarize arg_max(TimeGenerated, *) by EventId`). A chunk the API
refuses for its content (400, 413) is logged and skipped: sending it again would fail the same way and
hold the partition. A body that is not a normalized event is counted and skipped (detect dead-letters it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from azure.core.exceptions import HttpResponseError

from shared.clients.eventhubs import Position
from shared.clients.storage import default_credential, is_outage
from shared.clients.wiring import process_wide
from shared.settings import SettingsError, env_name, get_settings

log = logging.getLogger("stormwatch.delivery")
# The columns of StormwatchEvents_CL (infra/modules/loganalytics.bicep), from the normalized fields.
COLUMNS = {"EventId": "event_id", "Source": "source", "Category": "category", "Operation": "operation",
           "Action": "action", "Result": "result", "CommonEvent": "common_event", "Actor": "actor",
           "SourceIp": "source_ip", "ResourceId": "resource_id", "SubscriptionId": "subscription_id"}


class Uploader(Protocol):
    def upload(self, rule_id: str, stream_name: str, logs: Any, *, on_error: Any = None, **kwargs: Any) -> None:
        """LogsIngestionClient.upload."""


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    """One row: the columns analysts filter on, and the event without its original record under `Event`."""
    return {"TimeGenerated": event.get("time"), **{column: event.get(field) for column, field in COLUMNS.items()},
            "Event": {name: value for name, value in event.items() if name != "raw" and value is not None}}


@dataclass(frozen=True)
class ExportReport:
    partition: str | None
    events_in: int
    rows_sent: int
    not_events: int
    rows_refused: int
    duration_ms: float

    def as_log(self) -> str:
        return orjson.dumps({"function": "events_export", **self.__dict__}).decode()


def export_events(bodies: Sequence[tuple[bytes, Position]], client: Uploader, rule_id: str,
                  stream: str) -> ExportReport:
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    not_events = 0
    for body, _ in bodies:
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            not_events += 1
            continue
        if isinstance(event, dict) and isinstance(event.get("event_id"), str):
            rows.append(event_row(event))
        else:
            not_events += 1
    refused: list[int] = []

    def on_error(failure: Any) -> None:
        error = failure.error
        if is_outage(error) or not isinstance(error, HttpResponseError):
            raise error
        refused.append(len(failure.failed_logs))
        log.error("events_export: the Logs Ingestion API refused %d rows (%s)", len(failure.failed_logs),
                  error.status_code)

    if rows:
        client.upload(rule_id=rule_id, stream_name=stream, logs=rows, on_error=on_error)
    report = ExportReport(partition=bodies[0][1].partition if bodies else None, events_in=len(bodies),
                          rows_sent=len(rows) - sum(refused), not_events=not_events, rows_refused=sum(refused),
                          duration_ms=round((time.perf_counter() - started) * 1000, 3))
    log.log(logging.WARNING if refused or not_events else logging.INFO, report.as_log())
    return report


@dataclass(frozen=True)
class EventsTarget:
    client: Uploader
    rule_id: str
    stream: str


@process_wide
def events_target() -> EventsTarget:
    """The worker's Logs Ingestion client for events: the endpoint and rule the log_analytics route uses."""
    from azure.monitor.ingestion import LogsIngestionClient  # noqa: PLC0415 - only this function pays for it

    stream = get_settings().events_stream
    endpoint, rule_id = os.environ.get("STORMWATCH_LOGS_ENDPOINT"), os.environ.get("STORMWATCH_LOGS_RULE_ID")
    if not stream or not endpoint or not rule_id:
        raise SettingsError(f"{env_name('events_stream')}, STORMWATCH_LOGS_ENDPOINT and STORMWATCH_LOGS_RULE_ID "
                            "are required to export events")
    client = LogsIngestionClient(endpoint, default_credential(), retry_total=3, retry_backoff_max=30)
    return EventsTarget(client, rule_id, stream)


def export(bodies: Sequence[tuple[bytes, Position]]) -> ExportReport:
    target = events_target()
    return export_events(bodies, target.client, target.rule_id, target.stream)
