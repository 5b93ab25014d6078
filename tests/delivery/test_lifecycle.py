"""The alert lifecycle through the registered HTTP function and the CLI, over Azurite; closing a Defender
alert dismisses it in Defender (the fake ARM on 127.0.0.1) when dismissal is enabled."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from shared.caller import PRINCIPAL_HEADER
from shared.cli.main import main as cli_main
from shared.clients import wiring
from shared.delivery.engine import deliverer, run_delivery
from shared.inventory.api import with_lifecycle
from shared.inventory.dashboard import render_dashboard
from tests.delivery.conftest import DeliveryTables, make_alert
from tests.enrich.conftest import call, json_of
from tests.enrich.fake_arm import FakeArm, arm_path
from tests.test_caller import ERIN, READER_ONLY

JSON = {"content-type": "application/json"}


def status(alert_id: str, method: str = "GET", body: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None) -> Any:
    return call("alert_status", method, route={"id": alert_id}, body=orjson.dumps(body) if body else b"",
                headers={**JSON, **(headers or {})})


def test_acknowledge_then_close_records_who_and_why(delivery_tables: DeliveryTables) -> None:
    alert = make_alert(1)
    delivery_tables.save(alert)
    shown = json_of(status(alert.alert_id))
    assert shown["lifecycle"]["status"] == "new" and shown["routed"] is False and shown["deliveries"] == []
    acked = status(alert.alert_id, "POST", {"status": "acknowledged", "owner": "erin@contoso.example"})
    assert acked.status_code == 200
    assert json_of(acked)["lifecycle"] | {"changed_at": None} == {
        "status": "acknowledged", "owner": "erin@contoso.example", "reason": None, "changed_by": "function key",
        "changed_at": None}
    closed = json_of(status(alert.alert_id, "POST", {"status": "closed", "reason": "change ticket CHG-4711"}))
    assert closed["lifecycle"]["status"] == "closed" and closed["lifecycle"]["owner"] == "erin@contoso.example"
    assert closed["lifecycle"]["reason"] == "change ticket CHG-4711"
    assert closed["summary"] == alert.summary  # the alert itself is untouched
    assert closed["defender"] is None  # not raised from a Defender alert


@pytest.mark.parametrize(("alert_id", "body", "code", "words"), [
    ("not-an-id", None, 400, "32 lower-case hex"),
    ("0" * 32, None, 404, "no alert"),
    ("", {"status": "closed"}, 400, "reason is required"),
    ("", {"status": "resolved"}, 400, "status"),
    ("", {"status": "closed", "reason": "x", "extra": 1}, 400, "extra"),
])
def test_requests_that_cannot_be_honoured_get_a_4xx(delivery_tables: DeliveryTables, alert_id: str,
                                                    body: dict[str, Any] | None, code: int, words: str) -> None:
    alert = make_alert(1)
    delivery_tables.save(alert)
    response = status(alert_id or alert.alert_id, "POST" if body else "GET", body)
    assert response.status_code == code
    assert words in json_of(response)["error"]["message"]


def test_with_entra_sign_in_readers_read_responders_change_and_are_recorded(
        delivery_tables: DeliveryTables, app_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    app_env.setenv("STORMWATCH_HTTP_AUTH", "entra")
    wiring.reset()
    alert = make_alert(1)
    delivery_tables.save(alert)
    assert status(alert.alert_id).status_code == 401
    assert status(alert.alert_id, headers={PRINCIPAL_HEADER: READER_ONLY}).status_code == 200
    ack = {"status": "acknowledged"}
    assert status(alert.alert_id, "POST", ack, {PRINCIPAL_HEADER: READER_ONLY}).status_code == 403
    with caplog.at_level(logging.INFO, logger="stormwatch.alerts"):
        response = status(alert.alert_id, "POST", ack, {PRINCIPAL_HEADER: ERIN})
    assert json_of(response)["lifecycle"]["changed_by"] == "erin@contoso.example"
    assert any('"by":"erin@contoso.example"' in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("enabled", [True, False])
def test_closing_a_defender_alert_dismisses_it_when_enabled(delivery_tables: DeliveryTables, arm: FakeArm,
                                                            app_env: pytest.MonkeyPatch, enabled: bool) -> None:
    app_env.setenv("STORMWATCH_ALLOW_ALERT_DISMISS", str(enabled).lower())
    wiring.reset()
    defender = arm_path("alert-powershell")
    alert = make_alert(2, rule_id="defender-alert", group={"alert_id": defender.rsplit("/", 1)[-1],
                                                           "details.arm_id": defender})
    delivery_tables.save(alert)
    answer = json_of(status(alert.alert_id, "POST", {"status": "false_positive", "reason": "red team exercise"}))
    assert answer["lifecycle"]["status"] == "false_positive"
    posted = arm.calls(defender + "/dismiss", "POST")
    if enabled:
        assert answer["defender"] == {"id": defender, "status": "Dismissed", "dismissed_by": "function key"}
        assert len(posted) == 1
    else:
        assert answer["defender"] is None and posted == []


def test_a_close_saved_while_defender_cannot_be_configured_answers_200_and_says_so(
        delivery_tables: DeliveryTables, app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("STORMWATCH_ALLOW_ALERT_DISMISS", "true")
    app_env.setenv("STORMWATCH_ARM_ENDPOINT", "http://arm.example.com")  # plain http off loopback: refused
    wiring.reset()
    defender = arm_path("alert-powershell")
    alert = make_alert(3, rule_id="defender-alert", group={"alert_id": "x", "details.arm_id": defender})
    delivery_tables.save(alert)
    response = status(alert.alert_id, "POST", {"status": "closed", "reason": "handled"})
    assert response.status_code == 200
    answer = json_of(response)
    assert answer["lifecycle"]["status"] == "closed" and answer["defender"]["status"] == "not dismissed"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any], str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, [orjson.loads(line) for line in out.splitlines()], err


def test_the_cli_lists_shows_acks_closes_and_retries(delivery_tables: DeliveryTables,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    delivery_tables.routes("""
        routes:
          - name: hook
            destination: {type: webhook, url_setting: HOOK_NEVER_SET}
            max_attempts: 1
        """)
    first, second = make_alert(1), make_alert(2, severity="low")
    delivery_tables.save(first, second)
    for _ in range(2):  # no URL: one attempt allowed, so both fail (one per run: the route counts as down)
        run_delivery(deliverer())
    code, listed, _ = cli(capsys, "alerts", "list")
    assert code == 0 and [row["alert_id"] for row in listed] == [second.alert_id, first.alert_id]
    assert cli(capsys, "alerts", "ack", first.alert_id)[1][0]["lifecycle"]["owner"].startswith("cli:")
    closed = cli(capsys, "alerts", "close", second.alert_id, "--reason", "expected", "--false-positive")[1][0]
    assert closed["lifecycle"]["status"] == "false_positive"
    assert [row["alert_id"] for row in cli(capsys, "alerts", "list", "--status", "acknowledged")[1]] == [
        first.alert_id]
    failed = cli(capsys, "alerts", "list", "--failed")[1]
    assert {row["alert_id"] for row in failed} == {first.alert_id, second.alert_id}
    assert "HOOK_NEVER_SET" in failed[0]["last_error"]
    shown = cli(capsys, "alerts", "show", first.alert_id)[1][0]
    assert [row["status"] for row in shown["deliveries"]] == ["failed"]
    code, retried, err = cli(capsys, "alerts", "retry", first.alert_id)
    assert code == 0 and [row["status"] for row in retried] == ["pending"] and "1 failed deliveries" in err
    assert cli(capsys, "alerts", "show", "nope")[0] == 2
    assert cli(capsys, "alerts", "close", first.alert_id, "--reason", " ")[0] == 2


def test_the_dashboard_shows_each_alerts_status_and_the_failed_deliveries(
        delivery_tables: DeliveryTables) -> None:
    delivery_tables.routes("""
        routes:
          - name: hook
            destination: {type: webhook, url_setting: HOOK_NEVER_SET}
            max_attempts: 1
        """)
    alert = make_alert(1)
    delivery_tables.save(alert)
    run_delivery(deliverer())
    status(alert.alert_id, "POST", {"status": "acknowledged", "owner": "erin@contoso.example"})
    answer = json_of(call("inventory"))
    assert [(row["alert_id"], row["route"], row["attempts"]) for row in answer["failed_deliveries"]] == [
        (alert.alert_id, "hook", 1)]
    current = deliverer()
    latest = {"alert_id": alert.alert_id, "time": "2026-11-27T02:01:00Z", "severity": "high", "rule_id": "r",
              "subscription_name": "s", "summary": "x"}
    shown = with_lifecycle({**answer, "latest_alerts": [latest]}, current.alerts, current.outbox)
    assert shown["latest_alerts"][0] == {**latest, "status": "acknowledged", "owner": "erin@contoso.example"}
    page = render_dashboard(shown)
    assert "acknowledged (erin@contoso.example)" in page
    assert 'id="failed-deliveries"' in page and "app setting HOOK_NEVER_SET is not set" in page


def test_an_owner_the_model_refuses_is_a_one_line_usage_error(delivery_tables: DeliveryTables,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    alert = make_alert(1)
    delivery_tables.save(alert)
    code, out, err = cli(capsys, "alerts", "ack", alert.alert_id, "--owner", "x" * 10_000)
    assert code == 2 and out == [] and len(err.strip().splitlines()) == 1 and "owner" in err
