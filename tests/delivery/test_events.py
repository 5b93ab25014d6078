"""Normalized events into Log Analytics through the local Logs Ingestion stand-in (static-token
credential: no managed identity here): rows, what is skipped, what raises for a retry, and the binding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import azure.functions as func
import orjson
import pytest
from azure.core.exceptions import HttpResponseError
from azure.monitor.ingestion import LogsIngestionClient

from delivery_fn import bind_events_export
from shared.clients.eventhubs import Position
from shared.delivery.events import COLUMNS, export_events
from shared.normalize.batch import normalize_bodies
from tests.conftest import indexed_functions, sample
from tests.delivery.ingestion import RULE_ID, Ingestion, StaticToken, ingestion_service

STREAM = "Custom-StormwatchEvents_CL"


def normalized(relative: str) -> list[tuple[bytes, Position]]:
    events = normalize_bodies([(sample(relative), Position("sample", 0))], include_raw=True).events
    return [(event.body, Position("0", index)) for index, event in enumerate(events)]


def client(service: Ingestion, **options: Any) -> LogsIngestionClient:
    return LogsIngestionClient(service.endpoint, StaticToken(), connection_verify=str(service.certificate),
                               **options)


def test_events_become_rows_with_their_columns_and_without_the_original_record(tmp_path: Path) -> None:
    bodies = normalized("activity/nsg-rule-write.json")
    with ingestion_service(tmp_path) as service:
        report = export_events([*bodies, (b"not json", Position("0", 99)), (b"[1]", Position("0", 100))],
                               client(service), RULE_ID, STREAM)
    rows = service.rows[STREAM]
    assert (report.rows_sent, report.not_events, report.rows_refused) == (3, 2, 0)
    first = orjson.loads(bodies[0][0])
    assert [row["EventId"] for row in rows] == [orjson.loads(body)["event_id"] for body, _ in bodies]
    assert set(rows[0]) == {"TimeGenerated", "Event", *COLUMNS}
    assert rows[0]["TimeGenerated"] == first["time"] and rows[0]["Operation"] == first["operation"]
    assert "raw" not in rows[0]["Event"] and rows[0]["Event"]["event_id"] == first["event_id"]


def test_a_refused_chunk_is_skipped_and_an_outage_raises_for_the_retry_policy(tmp_path: Path) -> None:
    bodies = normalized("activity/nsg-rule-write.json")
    with ingestion_service(tmp_path) as service:
        service.answers = [(400, {})]
        refused = export_events(bodies, client(service), RULE_ID, STREAM)
        assert (refused.rows_sent, refused.rows_refused) == (0, 3)
        service.answers = [(503, {})]
        with pytest.raises(HttpResponseError):
            export_events(bodies, client(service, retry_total=0), RULE_ID, STREAM)


def test_the_export_binds_to_its_own_consumer_group_only_when_the_stream_is_set() -> None:
    assert "events_export" not in indexed_functions()  # STORMWATCH_EVENTS_STREAM is not set in tests
    app = func.FunctionApp()
    blueprint = func.Blueprint()  # type: ignore[no-untyped-call]
    bind_events_export(blueprint)
    app.register_functions(blueprint)
    (function,) = app.get_functions()
    trigger: Any = function.get_trigger()
    assert function.get_function_name() == "events_export"
    assert (trigger.consumer_group, trigger.event_hub_name) == (
        "%STORMWATCH_EVENTS_CONSUMER_GROUP%", "%STORMWATCH_NORMALIZED_HUB%")
