"""One structured log line per detect batch, at a level Application Insights can alert on, and the
host.json settings that keep every such line out of sampling."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from azure.core.exceptions import ServiceRequestError

from shared.clients.publisher import InProcessPublisher, OutgoingEvent
from shared.detect.engine import detect_batch
from tests.conftest import REPO
from tests.detect_fixtures import BURST_RULE, Tables, TransactionCounter, batch, deletes, rule_from, tables

__all__ = ["tables"]  # the fixture, used by name


def detect_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    return [(record.levelname, orjson.loads(record.getMessage())) for record in caplog.records
            if record.name == "stormwatch.detect"]


def test_detect_logs_counts_transactions_duration_and_lag_once_per_batch(
        tables: Tables, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    counter = TransactionCounter()
    detector = tables.detector([rule_from(tmp_path, BURST_RULE)], counter, inventory=True)
    warm_up = deletes(10, first=500, actor="bob@contoso.example")  # creates both tables, raises one alert
    events = [*deletes(11), *deletes(3, first=12, actor="eve@contoso.example"), warm_up[0]]
    with caplog.at_level("INFO", logger="stormwatch.detect"):
        detect_batch(batch(warm_up), detector)
        counter.reset()
        detect_batch(batch(events, first_sequence=10) + batch([{"no": "id"}], first_sequence=99), detector)
    (first_level, _), (level, line) = detect_lines(caplog)
    assert first_level == "INFO"
    assert level == "WARNING", "a dead letter makes the line a warning"
    assert (line["events_in"], line["dead_letters"], line["matched"]) == (16, 1, {"burst": 15})
    assert len(line["alerts_new"]) == 1  # type: ignore[arg-type]
    assert line["table_transactions"] == counter.count, "every Table request of the batch, inventory included"
    assert any("inventory" in url for url in counter.urls), "the inventory table was written"
    assert line["lag_ms"] >= 0 and line["duration_ms"] > 0  # type: ignore[operator]


class AlertsHubDown(InProcessPublisher):
    def publish(self, hub: str, events: Sequence[OutgoingEvent]) -> None:
        raise ServiceRequestError("alerts hub unreachable")


def test_an_outage_logs_one_retry_line_naming_the_partition_before_it_raises(
        tables: Tables, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The `detect-retry-loop` health alert counts these lines per partition to spot a stalled one."""
    detector = tables.detector([rule_from(tmp_path, BURST_RULE)], publisher=AlertsHubDown())
    with caplog.at_level("INFO", logger="stormwatch.detect"), pytest.raises(ServiceRequestError):
        detect_batch(batch(deletes(10), partition="3"), detector)
    [(level, line)] = detect_lines(caplog)
    assert level == "WARNING"
    assert line == {"function": "detect", "outcome": "retry", "partition": "3", "error": "ServiceRequestError"}


def test_host_keeps_every_batch_line_out_of_sampling_at_information_level() -> None:
    host = orjson.loads((REPO / "host.json").read_bytes())
    levels = host["logging"]["logLevel"]
    assert levels["Function"] == "Information", "the worker's logs are categorised Function.<name>.User"
    excluded = host["logging"]["applicationInsights"]["samplingSettings"]["excludedTypes"].split(";")
    assert "Trace" in excluded and "Exception" in excluded
