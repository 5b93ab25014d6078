"""Delivery to a real webhook receiver on 127.0.0.1 through the outbox in Azurite: formats, signing,
retries, failure, manual retry, and a receiver that dies mid-run."""

from __future__ import annotations

import hashlib
import hmac
import logging
import textwrap
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from shared.clients import wiring
from shared.delivery.destinations import IDEMPOTENCY_HEADER, SIGNATURE_HEADER
from shared.delivery.engine import deliverer, run_delivery
from shared.delivery.formats import CARD_CONTENT_TYPE, CARD_SCHEMA
from shared.delivery.outbox import Outbox
from shared.detect.rules.errors import LoadError
from tests.conftest import indexed_functions
from tests.delivery.conftest import DeliveryTables, make_alert
from tests.delivery.receiver import Receiver, receiving

SECRET = "s3cret-from-an-app-setting"  # noqa: S105 - a test's signing key


def three_formats(tables: DeliveryTables) -> None:
    tables.routes("""
        routes:
          - name: soar
            destination: {type: webhook, format: json, url_setting: HOOK_JSON, secret_setting: HOOK_SECRET}
          - name: teams
            match: {min_severity: high}
            destination: {type: webhook, format: teams, url_setting: HOOK_TEAMS}
          - name: slack
            match: {rules: [role-*]}
            destination: {type: webhook, format: slack, url_setting: HOOK_SLACK}
          - name: nobody
            match: {tags: [attack.t1078]}
            destination: {type: webhook, url_setting: HOOK_NOBODY}
        """)


def test_json_teams_and_slack_payloads_with_their_documented_required_fields(
        delivery_tables: DeliveryTables) -> None:
    three_formats(delivery_tables)
    alert = make_alert(1, summary="dave added <Owner> & more on rg-prod-web")
    delivery_tables.save(alert)
    with receiving() as receiver:
        environ = {"HOOK_JSON": receiver.url + "/json", "HOOK_TEAMS": receiver.url + "/teams",
                   "HOOK_SLACK": receiver.url + "/slack", "HOOK_SECRET": SECRET}
        report = run_delivery(delivery_tables.deliverer(environ))
    assert (report.alerts_routed, report.deliveries_added, report.delivered) == (1, 3, 3)
    by_path = {request.path: request for request in receiver.received}
    assert set(by_path) == {"/hook/json", "/hook/teams", "/hook/slack"}
    for request in by_path.values():
        assert request.headers[IDEMPOTENCY_HEADER.lower()] == alert.alert_id
        assert request.headers["content-type"] == "application/json"

    signed = by_path["/hook/json"]
    expected = "sha256=" + hmac.new(SECRET.encode(), signed.body, hashlib.sha256).hexdigest()
    assert signed.headers[SIGNATURE_HEADER.lower()] == expected
    assert SIGNATURE_HEADER.lower() not in by_path["/hook/teams"].headers  # no secret_setting, no signature
    document = signed.json()
    assert {key: document[key] for key in ("alert_id", "rule_id", "severity", "summary", "route")} == {
        "alert_id": alert.alert_id, "rule_id": alert.rule_id, "severity": "high", "summary": alert.summary,
        "route": "soar"}
    assert document["context"] == {}

    # Teams Workflows: a message whose attachment is an Adaptive Card (type, version and body required).
    teams = by_path["/hook/teams"].json()
    assert teams["type"] == "message"
    (attachment,) = teams["attachments"]
    assert attachment["contentType"] == CARD_CONTENT_TYPE
    card = attachment["content"]
    assert (card["$schema"], card["type"], card["version"]) == (CARD_SCHEMA, "AdaptiveCard", "1.4")
    assert all(element["type"] in ("TextBlock", "FactSet") for element in card["body"])
    assert all(element["text"] for element in card["body"] if element["type"] == "TextBlock")
    facts = next(element["facts"] for element in card["body"] if element["type"] == "FactSet")
    assert {"title": "Rule", "value": alert.rule_id} in facts and all(set(fact) == {"title", "value"} for fact in facts)

    # Slack Block Kit: `text` fallback, blocks with their types and limits, mrkdwn escaped.
    slack = by_path["/hook/slack"].json()
    assert slack["text"] and [block["type"] for block in slack["blocks"]] == ["header", "section", "section",
                                                                             "context"]
    header, summary, fields, _ = slack["blocks"]
    assert header["text"]["type"] == "plain_text" and len(header["text"]["text"]) <= 150
    assert summary["text"] == {"type": "mrkdwn", "text": "dave added &lt;Owner&gt; &amp; more on rg-prod-web"}
    assert 1 <= len(fields["fields"]) <= 10 and all(field["type"] == "mrkdwn" for field in fields["fields"])


def test_delivered_alerts_are_not_sent_again(delivery_tables: DeliveryTables) -> None:
    three_formats(delivery_tables)
    delivery_tables.save(make_alert(1))
    with receiving() as receiver:
        environ = {"HOOK_JSON": receiver.url, "HOOK_TEAMS": receiver.url, "HOOK_SLACK": receiver.url,
                   "HOOK_SECRET": SECRET}
        deliverer = delivery_tables.deliverer(environ)
        run_delivery(deliverer)
        delivery_tables.save(make_alert(1))  # detection redelivered: the same alert saved again, unrouted
        again = run_delivery(deliverer)
    assert (again.alerts_routed, again.deliveries_added, again.attempted) == (1, 0, 0)
    assert len(receiver.received) == 3


def one_route(tables: DeliveryTables, max_attempts: int = 3) -> None:
    tables.routes(f"""
        routes:
          - name: hook
            destination: {{type: webhook, url_setting: HOOK}}
            max_attempts: {max_attempts}
            backoff_seconds: 0
        """)


def test_retries_until_failed_then_a_manual_retry_delivers(delivery_tables: DeliveryTables) -> None:
    one_route(delivery_tables, max_attempts=3)
    alert = make_alert(1)
    delivery_tables.save(alert)
    with receiving(answers=[503, 429, 500]) as receiver:
        deliverer = delivery_tables.deliverer({"HOOK": receiver.url})
        reports = [run_delivery(deliverer) for _ in range(4)]
        assert [(report.retrying, report.failed) for report in reports] == [(1, 0), (1, 0), (0, 1), (0, 0)]
        (row,) = deliverer.outbox.of_alert(alert.alert_id)
        assert (row.status, row.attempts, row.last_error) == ("failed", 3, "webhook answered 500")
        assert [failed.alert_id for failed in deliverer.outbox.failed(10)] == [alert.alert_id]
        retried = deliverer.outbox.retry(alert.alert_id, None, deliverer.clock())
        assert [item.status for item in retried] == ["pending"]
        assert run_delivery(deliverer).delivered == 1
    (row,) = deliverer.outbox.of_alert(alert.alert_id)
    assert row.status == "delivered" and row.delivered_at is not None
    assert len(receiver.received) == 4 and len(receiver.kept) == 1


def test_a_refused_body_fails_at_once(delivery_tables: DeliveryTables) -> None:
    one_route(delivery_tables, max_attempts=5)
    delivery_tables.save(make_alert(1))
    with receiving(answers=[400]) as receiver:
        report = run_delivery(delivery_tables.deliverer({"HOOK": receiver.url}))
    assert (report.failed, report.retrying) == (1, 0)


def test_the_receivers_retry_after_is_honoured(delivery_tables: DeliveryTables) -> None:
    one_route(delivery_tables)  # backoff 0: without Retry-After the row would be due again at once
    alert = make_alert(1)
    delivery_tables.save(alert)
    with receiving(answers=[429], retry_after="120") as receiver:
        deliverer = delivery_tables.deliverer({"HOOK": receiver.url})
        before = deliverer.clock()
        assert run_delivery(deliverer).retrying == 1
        assert run_delivery(deliverer).attempted == 0
    (row,) = deliverer.outbox.of_alert(alert.alert_id)
    assert row.status == "pending" and row.next_attempt >= before + timedelta(seconds=120)


@pytest.mark.parametrize("environ", [{}, {"HOOK": "ftp://127.0.0.1/x"}, {"HOOK": "http://example.com/hook"}])
def test_a_missing_or_unusable_url_setting_is_retried_never_raised(delivery_tables: DeliveryTables,
                                                                  environ: dict[str, str]) -> None:
    one_route(delivery_tables)
    alert = make_alert(1)
    delivery_tables.save(alert)
    deliverer = delivery_tables.deliverer(environ)
    assert run_delivery(deliverer).retrying == 1
    (row,) = deliverer.outbox.of_alert(alert.alert_id)
    assert row.status == "pending" and row.last_error and "HOOK" in row.last_error


def test_a_named_secret_that_is_missing_sends_nothing_unsigned(delivery_tables: DeliveryTables) -> None:
    delivery_tables.routes("""
        routes:
          - name: hook
            destination: {type: webhook, url_setting: HOOK, secret_setting: HOOK_SECRET}
        """)
    delivery_tables.save(make_alert(1))
    with receiving() as receiver:
        report = run_delivery(delivery_tables.deliverer({"HOOK": receiver.url}))
    assert report.retrying == 1 and receiver.received == []


def test_a_broken_routes_file_keeps_alerts_unrouted_until_it_is_fixed(delivery_tables: DeliveryTables) -> None:
    one_route(delivery_tables)
    delivery_tables.save(make_alert(1))
    with receiving() as receiver:
        deliverer = delivery_tables.deliverer({"HOOK": receiver.url})
        deliverer.routes.errors.append(LoadError(delivery_tables.folder / "routes.yaml", 3, "a broken route"))
        held = run_delivery(deliverer)
        assert (held.alerts_routed, held.deliveries_added, held.delivered) == (0, 1, 1)  # good routes still deliver
        assert held.route_errors
        deliverer.routes.errors.clear()
        fixed = run_delivery(deliverer)
    assert (fixed.alerts_routed, fixed.deliveries_added, fixed.attempted) == (1, 0, 0)
    assert len(receiver.received) == 1


def test_a_receiver_killed_mid_run_gets_every_alert_exactly_once_after_it_returns(
        delivery_tables: DeliveryTables) -> None:
    one_route(delivery_tables, max_attempts=10)
    alerts = [make_alert(number) for number in range(20)]
    delivery_tables.save(*alerts)
    receiver = Receiver(die_after=7).start()
    try:
        deliverer = delivery_tables.deliverer({"HOOK": receiver.url})
        first = run_delivery(deliverer)
        assert not receiver.running  # it died during the run
        assert first.delivered == 7 and first.retrying == 1 and first.waiting == 12  # the route is down
        assert run_delivery(deliverer).delivered == 0  # still down: a retry, no loss, no raise
        receiver.start()  # back, on the same port
        runs = [run_delivery(deliverer) for _ in range(2)]
    finally:
        receiver.stop()
    assert sum(run.delivered for run in runs) == 13 and runs[-1].attempted == 0
    delivered_keys = [request.headers[IDEMPOTENCY_HEADER.lower()] for request in receiver.received]
    assert sorted(delivered_keys) == sorted(alert.alert_id for alert in alerts)  # each once, none twice
    rows = [row for alert in alerts for row in deliverer.outbox.of_alert(alert.alert_id)]
    assert {row.status for row in rows} == {"delivered"} and len(rows) == 20


def test_the_timer_function_delivers_through_a_routes_file_uploaded_to_the_rules_container(
        delivery_tables: DeliveryTables, app_env: pytest.MonkeyPatch) -> None:
    one_route(delivery_tables)  # the packaged folder's routes.yaml: a route named "hook"
    container = BlobServiceClient.from_connection_string(delivery_tables.connection_string).create_container(
        f"rules{uuid.uuid4().hex[:10]}")
    alert = make_alert(1)
    delivery_tables.save(alert)
    with receiving() as receiver:
        container.upload_blob("routes.yaml", textwrap.dedent(f"""
            routes:
              - name: uploaded
                destination: {{type: webhook, format: slack, url: "{receiver.url}"}}
            """))
        app_env.setenv("STORMWATCH_RULES_CONTAINER", container.container_name)
        wiring.reset()
        indexed_functions()["delivery"].get_user_function()(None)
    assert len(receiver.received) == 1 and "blocks" in receiver.received[0].json()
    assert [row.route for row in deliverer().outbox.of_alert(alert.alert_id)] == ["uploaded"]


def test_delivered_rows_are_forgotten_after_thirty_days_failed_ones_stay(delivery_tables: DeliveryTables) -> None:
    one_route(delivery_tables, max_attempts=1)
    # Due rows come in PartitionKey (alert id) order: the first is answered 200, the second 400.
    delivered, failed = sorted((make_alert(1), make_alert(2)), key=lambda alert: alert.alert_id)
    delivery_tables.save(delivered, failed)
    with receiving(answers=[200, 400]) as receiver:
        deliverer = delivery_tables.deliverer({"HOOK": receiver.url})
        assert run_delivery(deliverer).forgotten == 0
        deliverer.clock = lambda: datetime.now(UTC) + timedelta(days=31)
        assert run_delivery(deliverer).forgotten == 1
    assert [(alert_id, [row.status for row in deliverer.outbox.of_alert(alert_id)])
            for alert_id in (delivered.alert_id, failed.alert_id)] == [(delivered.alert_id, []),
                                                                       (failed.alert_id, ["failed"])]


def test_rows_edited_into_garbage_are_skipped_never_raised(delivery_tables: DeliveryTables,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    one_route(delivery_tables)
    good = make_alert(1)
    delivery_tables.save(good)
    service = delivery_tables.service()
    service.get_table_client(delivery_tables.alerts).upsert_entity(
        {"PartitionKey": "f" * 32, "RowKey": "alert", "routed": False, "severity": "apocalyptic"})
    outbox = service.create_table_if_not_exists(delivery_tables.deliveries)
    outbox.upsert_entity({"PartitionKey": "e" * 32, "RowKey": "hook", "status": "pending", "attempts": "many",
                          "next_attempt": datetime(2026, 1, 1, tzinfo=UTC)})
    with receiving() as receiver:
        deliverer = delivery_tables.deliverer({"HOOK": receiver.url})
        with caplog.at_level(logging.WARNING, logger="stormwatch.delivery"):
            report = run_delivery(deliverer)
    assert (report.alerts_routed, report.delivered) == (1, 1) and len(receiver.received) == 1
    assert 'alert row "ffffffffffffffffffffffffffffffff" unreadable' in caplog.text
    assert "unreadable: skipped" in caplog.text
    assert deliverer.alerts.get("f" * 32) is None and deliverer.outbox.of_alert("e" * 32) == []


def test_an_outcome_for_a_row_deleted_meanwhile_is_dropped_not_raised(delivery_tables: DeliveryTables) -> None:
    """A row removed by hand while its send was in flight: the timer must not fail on it every minute."""
    outbox = Outbox(delivery_tables.service().get_table_client(delivery_tables.deliveries))
    now = datetime.now(UTC)
    outbox.add("a1", "soc", "webhook", now)
    [due] = list(outbox.due(now, 10))
    claimed = outbox.claim(due, now + timedelta(minutes=5))
    assert claimed is not None
    outbox.table.delete_entity("a1", "soc")
    outbox.record(claimed, claimed.delivery.model_copy(update={"status": "delivered"}))
    assert outbox.of_alert("a1") == []
