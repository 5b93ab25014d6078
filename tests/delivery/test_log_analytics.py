"""The log_analytics destination through azure-monitor-ingestion's LogsIngestionClient against a local
stand-in of the Logs Ingestion API (tests/delivery/ingestion.py). The credential is a static token: the
managed identity DefaultAzureCredential uses in Azure cannot exist here."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from shared.delivery.engine import run_delivery
from tests.delivery.conftest import DeliveryTables, make_alert
from tests.delivery.ingestion import RULE_ID, StaticToken, ingestion_service

ROUTE = """
    routes:
      - name: sentinel
        destination: {type: log_analytics}
        backoff_seconds: 0
"""
# The columns infra/modules/loganalytics.bicep declares for StormwatchAlerts_CL.
COLUMNS = {"TimeGenerated", "AlertTime", "AlertId", "RuleId", "Title", "Severity", "Summary", "EventCount",
           "FirstSeen", "LastSeen", "GroupValues", "EventIds", "Tags", "Context", "Route"}


def test_alerts_reach_the_dcr_stream_gzip_json_with_a_bearer_token(delivery_tables: DeliveryTables,
                                                                   tmp_path: Path) -> None:
    delivery_tables.routes(ROUTE)
    alerts = [make_alert(number) for number in range(3)]
    delivery_tables.save(*alerts)
    credential = StaticToken()
    with ingestion_service(tmp_path) as service:
        environ = {"STORMWATCH_LOGS_ENDPOINT": service.endpoint, "STORMWATCH_LOGS_RULE_ID": RULE_ID}
        deliverer = delivery_tables.deliverer(environ, credential=credential,
                                              ingestion_options={"connection_verify": str(service.certificate)})
        report = run_delivery(deliverer)
    assert report.delivered == 3
    rows = service.rows["Custom-StormwatchAlerts_CL"]
    assert sorted(row["AlertId"] for row in rows) == sorted(alert.alert_id for alert in alerts)
    assert all(set(row) == COLUMNS for row in rows)
    assert all("api-version=" in request["path"] for request in service.requests)
    assert credential.scopes and all(scope == ("https://monitor.azure.com/.default",) for scope in credential.scopes)


def test_throttling_is_waited_out_by_the_client_and_its_retry_after_kept_when_it_gives_up(
        delivery_tables: DeliveryTables, tmp_path: Path) -> None:
    delivery_tables.routes(ROUTE)
    alert = make_alert(1)
    delivery_tables.save(alert)
    with ingestion_service(tmp_path) as service:
        environ = {"STORMWATCH_LOGS_ENDPOINT": service.endpoint, "STORMWATCH_LOGS_RULE_ID": RULE_ID}
        verify = {"connection_verify": str(service.certificate)}
        service.answers = [(429, {"Retry-After": "1"})]
        patient = delivery_tables.deliverer(environ, credential=StaticToken(), ingestion_options=verify)
        assert run_delivery(patient).delivered == 1  # the SDK's retry policy waited one second and sent again
        assert len(service.requests) == 2

        second = make_alert(2)
        delivery_tables.save(second)
        service.answers = [(429, {"Retry-After": "300"})]
        impatient = delivery_tables.deliverer(environ, credential=StaticToken(),
                                              ingestion_options={**verify, "retry_total": 0})
        before = impatient.clock()
        assert run_delivery(impatient).retrying == 1
    (row,) = impatient.outbox.of_alert(second.alert_id)
    assert row.status == "pending" and row.last_error == "Logs Ingestion answered 429"
    assert row.next_attempt >= before + timedelta(seconds=300)


def test_a_body_too_large_fails_at_once_and_a_missing_setting_is_retried(delivery_tables: DeliveryTables,
                                                                          tmp_path: Path) -> None:
    delivery_tables.routes(ROUTE)
    alert = make_alert(1)
    delivery_tables.save(alert)
    with ingestion_service(tmp_path) as service:
        unset = delivery_tables.deliverer({"STORMWATCH_LOGS_ENDPOINT": service.endpoint}, credential=StaticToken())
        assert run_delivery(unset).retrying == 1
        (row,) = unset.outbox.of_alert(alert.alert_id)
        assert row.last_error == "app setting STORMWATCH_LOGS_RULE_ID is not set"
        service.answers = [(413, {})]
        environ = {"STORMWATCH_LOGS_ENDPOINT": service.endpoint, "STORMWATCH_LOGS_RULE_ID": RULE_ID}
        deliverer = delivery_tables.deliverer(environ, credential=StaticToken(),
                                              ingestion_options={"connection_verify": str(service.certificate)})
        assert run_delivery(deliverer).failed == 1
    (row,) = deliverer.outbox.of_alert(alert.alert_id)
    assert (row.status, row.last_error) == ("failed", "Logs Ingestion answered 413")
