"""detect_fn end to end against Azurite: bindings, the registered handlers, exactness under redelivery and
crashes, late events, suppression, first-seen learning, dead letters, and the replay command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient, UpdateMode
from azure.functions.timer import TimerRequest

from shared import __version__
from shared.cli import azurite
from shared.clients import wiring
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import Position, bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher, OutgoingEvent
from shared.clients.storage import emulator_connection_string
from shared.detect.alerts import TableAlertStore
from shared.detect.day_tables import DayTables
from shared.detect.engine import Detector, detect_batch, housekeep
from shared.detect.rules import Rule
from shared.detect.rules.aggregate import Hit, KeyContext, KeyState, Transition, advance
from shared.detect.state import StateTable, StateTooLargeError, TableEntityStore, Write
from tests.conftest import REPO, SAMPLES, indexed_functions
from tests.detect_fixtures import (
    BURST_RULE,
    DEVELOPMENT,
    T0,
    Tables,
    deletes,
    event,
    rule_from,
    run,
    tables,
)

__all__ = ["tables"]  # the fixture, used by name


def registered(name: str) -> Any:
    return indexed_functions()[name]


def test_detect_is_an_event_hub_batch_trigger_on_the_normalized_hub_named_by_settings() -> None:
    trigger = orjson.loads(registered("detect").get_function_json())["bindings"][0]
    assert trigger["type"] == "eventHubTrigger"
    assert trigger["cardinality"].lower() == "many"
    assert trigger["dataType"].lower() == "binary"
    assert trigger["eventHubName"] == "%STORMWATCH_NORMALIZED_HUB%"
    assert trigger["consumerGroup"] == "%STORMWATCH_DETECT_CONSUMER_GROUP%"
    assert trigger["connection"] == "EventHubConnection"


def test_detect_retries_until_state_storage_is_back() -> None:
    retry = registered("detect").get_setting("retry_policy").get_dict_repr()
    assert retry["strategy"] == "exponential_backoff"
    assert retry["max_retry_count"] == "-1"
    assert retry["minimum_interval"] == "00:00:05" and retry["maximum_interval"] == "00:05:00"


def test_housekeeping_is_an_hourly_timer_in_the_same_blueprint() -> None:
    trigger = orjson.loads(registered("detect_housekeeping").get_function_json())["bindings"][0]
    assert trigger["type"] == "timerTrigger"
    assert trigger["schedule"] == "0 7 * * * *" and trigger["runOnStartup"] is False
    assert trigger["useMonitor"] is True


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "burst.yaml").write_text(BURST_RULE)
    return folder


def test_the_registered_handlers_detect_and_keep_house(tables: Tables, rules_dir: Path,
                                                       app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("STORMWATCH_RULES_DIR", str(rules_dir))
    wiring.reset()
    events = trigger_batch([orjson.dumps(item) for item in deletes(12)], partition="3", first_sequence=40)
    registered("detect").get_user_function()(events)
    publisher = wiring.publisher()
    assert isinstance(publisher, InProcessPublisher)
    [published] = publisher.hubs["alerts"]
    alert = orjson.loads(published.body)
    assert alert["rule_id"] == "burst" and alert["count"] == 10
    assert alert["group"] == {"actor": "mallory@contoso.example"}
    assert set(alert) == {"alert_id", "rule_id", "title", "severity", "time", "group", "count", "first_seen",
                          "last_seen", "event_ids", "summary", "tags", "references", "falsepositives", "author",
                          "stormwatch_version"}
    stored = TableAlertStore(tables.service().get_table_client(tables.alerts)).get(alert["alert_id"])
    assert stored is not None and orjson.loads(stored.to_json()) == alert
    registered("detect_housekeeping").get_user_function()(TimerRequest())
    assert tables.count_of(rule_from(rules_dir.parent, BURST_RULE), "mallory@contoso.example") == 12


@pytest.fixture
def burst(tmp_path: Path) -> Rule:
    return rule_from(tmp_path, BURST_RULE)


def test_redelivery_of_a_whole_batch_changes_no_count_and_raises_nothing_new(tables: Tables, burst: Rule) -> None:
    detector = tables.detector([burst])
    events = deletes(10) + deletes(5, first=10, actor="eve@contoso.example")
    first = run(detector, events, first_sequence=500)
    assert len(first.alerts) == 1
    again = run(tables.detector([burst]), events, first_sequence=500)  # a new instance took the partition
    assert again.alerts == [] and again.alerts_repeated == 1 and again.redelivered == 15
    assert again.state_writes == 0
    assert tables.count_of(burst, "mallory@contoso.example") == 10
    assert tables.count_of(burst, "eve@contoso.example") == 5
    assert len(tables.alert_ids()) == 1


def test_redelivery_from_the_middle_of_a_batch_applies_only_the_new_half(tables: Tables, burst: Rule) -> None:
    detector = tables.detector([burst])
    events = deletes(8, every=timedelta(minutes=1))
    run(detector, events[:6], first_sequence=0)
    report = run(detector, events[3:], first_sequence=3)  # the host restarted from sequence 3
    assert report.redelivered == 3
    assert tables.count_of(burst, "mallory@contoso.example") == 8


class FailingStore(TableEntityStore):
    """A real table store that loses its connection once a budget of writes, shared by the state table and
    its day tables, is spent (a crash half-way)."""

    def __init__(self, table: TableClient, budget: list[int]) -> None:
        super().__init__(table)
        self.budget = budget

    def write_batch(self, writes: Sequence[Write]) -> list[str]:
        for _ in writes:  # the connection drops before a transaction it cannot finish is sent
            if self.budget[0] == 0:
                raise ServiceRequestError("connection reset by peer")
            self.budget[0] -= 1
        return super().write_batch(writes)


def crashing_state(tables: Tables, writes: int) -> StateTable:
    """Detection state whose connection drops after `writes` writes (to any of its tables)."""
    service, budget = tables.service(), [writes]
    return StateTable(FailingStore(service.get_table_client(tables.state), budget),
                      days=DayTables(service, tables.state, store=lambda table: FailingStore(table, budget)))


def test_a_batch_that_failed_half_way_is_exact_after_redelivery(tables: Tables, burst: Rule) -> None:
    crashing = Detector(rules=[burst], state=crashing_state(tables, 3),
                        alerts=TableAlertStore(tables.service().get_table_client(tables.alerts)),
                        publisher=InProcessPublisher(), alerts_hub="alerts", dead_letters=InMemoryDeadLetterStore())
    callers = [f"caller-{n}" for n in range(6)]
    events = [item for n, actor in enumerate(callers) for item in deletes(n + 5, first=100 * n, actor=actor)]
    with pytest.raises(ServiceRequestError):
        run(crashing, events)
    written = [actor for actor in callers if tables.state_of(burst, actor) is not None]
    assert 0 < len(written) < len(callers)  # some keys were updated before the crash
    retried = run(tables.detector([burst]), events)
    assert retried.redelivered == sum(n + 5 for n, actor in enumerate(callers) if actor in written)
    for n, actor in enumerate(callers):
        assert tables.count_of(burst, actor) == n + 5
    assert {alert.group["actor"] for alert in retried.alerts} == {"caller-5"}  # 10 deletes, once


class PublisherDownOnce(InProcessPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def publish(self, hub: str, events: Sequence[OutgoingEvent]) -> None:
        if self.down:
            self.down = False
            raise ServiceRequestError("alerts hub unreachable")
        super().publish(hub, events)


def test_an_alert_whose_publish_failed_is_published_once_on_redelivery(tables: Tables, burst: Rule) -> None:
    publisher = PublisherDownOnce()
    detector = tables.detector([burst], publisher=publisher)
    events = deletes(10)
    with pytest.raises(ServiceRequestError):
        run(detector, events)
    # issue 14: the alert is stored before it is published, marked not yet published
    [stored] = tables.alert_ids()
    assert tables.count_of(burst, "mallory@contoso.example") == 10 and detector.alerts.stage(stored) == "saved"
    retried = run(detector, events)  # the retry policy redelivers the same batch
    assert retried.state_writes == 0 and len(retried.alerts) == 1
    assert tables.alert_ids() == {retried.alerts[0].alert_id} == {stored}
    assert detector.alerts.stage(stored) == "published"
    assert [orjson.loads(item.body)["alert_id"] for item in publisher.hubs["alerts"]] == [retried.alerts[0].alert_id]
    assert run(detector, events).alerts == []


def test_every_alert_names_the_release_that_raised_it_and_keeps_it_in_storage(tables: Tables, burst: Rule) -> None:
    detector = tables.detector([burst])
    [alert] = run(detector, deletes(10)).alerts
    assert alert.stormwatch_version == __version__
    assert orjson.loads(alert.to_json())["stormwatch_version"] == __version__
    assert isinstance(detector.alerts, TableAlertStore)
    stored = detector.alerts.get(alert.alert_id)
    assert stored is not None and stored.stormwatch_version == __version__


def test_late_and_out_of_order_batches_count_in_event_time(tables: Tables, burst: Rule) -> None:
    detector = tables.detector([burst])
    minute = timedelta(minutes=1)
    run(detector, deletes(5, T0 + 20 * minute), partition="0", first_sequence=0)
    late = run(detector, deletes(5, T0 + 2 * minute, first=5), partition="1", first_sequence=0)
    assert late.alerts == [] and late.too_late == 0
    completing = run(detector, list(reversed(deletes(5, T0 + 12 * minute, first=10))), partition="2")
    [alert] = completing.alerts
    assert alert.count == 10 and alert.first_seen == T0 + 12 * minute
    too_late = run(detector, deletes(3, T0 - 60 * minute, first=20), partition="3")
    assert too_late.too_late == 3 and tables.count_of(burst, "mallory@contoso.example") == 15


def test_suppression_lives_with_the_counts_across_batches_and_instances(tables: Tables, burst: Rule) -> None:
    first = run(tables.detector([burst]), deletes(12), partition="0")
    during = run(tables.detector([burst]), deletes(12, T0 + timedelta(minutes=20), first=100), partition="1")
    after = run(tables.detector([burst]), deletes(12, T0 + timedelta(hours=2), first=200), partition="2")
    assert [len(report.alerts) for report in (first, during, after)] == [1, 0, 1]


FIRST_SEEN = """
title: Sign-in from a new country
name: country
id: 5e1f0000-0000-4000-8000-000000000003
description: test
level: medium
logsource: {product: azure}
detection: {signed_in: {action: sign_in, result: Success}, condition: signed_in}
group-by: [actor]
first_seen: {fields: [details.country], learning: 2d}
summary: "{actor} from {details.country}"
"""


def test_first_seen_learns_for_two_days_of_event_time_then_alerts_once(tables: Tables, tmp_path: Path) -> None:
    rule = rule_from(tmp_path, FIRST_SEEN)
    detector = tables.detector([rule])

    def signin(number: int, days: float, country: str, actor: str = "dave@contoso.example") -> dict[str, Any]:
        return event(number, T0 + timedelta(days=days), action="sign_in", actor=actor,
                     details={"country": country})

    learning = run(detector, [signin(0, 0, "US"), signin(1, 1.5, "BR")], partition="0")
    assert learning.alerts == [] and learning.keys_touched == 2
    after = run(tables.detector([rule]), [signin(2, 3, "BR"), signin(3, 3, "NG"), signin(4, 3.1, "ng"),
                                          signin(5, 4, "NG", actor="erin@contoso.example")], partition="1")
    assert sorted(alert.summary for alert in after.alerts) == ["dave@contoso.example from NG",
                                                                "erin@contoso.example from NG"]
    assert run(detector, [signin(6, 5, "NG")], partition="2").alerts == []


def test_first_seen_alerts_again_when_a_value_returns_after_forget(tables: Tables, tmp_path: Path) -> None:
    """Whether housekeeping deleted the value's entity or not yet, its return after `forget` is a new alert,
    with its own id (the first-seen time is part of it): the alerts table keeps the first one forever."""
    rule = rule_from(tmp_path, FIRST_SEEN.replace("learning: 2d", "learning: 1d, forget: 30d"))

    def signin(number: int, days: float, country: str = "NG") -> dict[str, Any]:  # days before T0: not future
        return event(number, T0 + timedelta(days=days), action="sign_in", actor="dave@contoso.example",
                     details={"country": country})

    run(tables.detector([rule]), [signin(0, -100, "US")], first_sequence=0)  # learning starts
    first = run(tables.detector([rule]), [signin(1, -98)], first_sequence=1)
    within = run(tables.detector([rule]), [signin(2, -80)], first_sequence=2)
    back = run(tables.detector([rule]), [signin(3, -40)], first_sequence=3)  # 40 days unseen, entity still there
    assert [len(report.alerts) for report in (first, within, back)] == [1, 0, 1]
    assert first.alerts[0].alert_id != back.alerts[0].alert_id
    redelivered = run(tables.detector([rule]), [signin(3, -40)], first_sequence=3)
    assert redelivered.alerts == [] and redelivered.alerts_repeated == 1
    detector = tables.detector([rule])
    deleted = housekeep(detector, datetime.now(UTC) + timedelta(days=31))  # nothing written for 30 days
    assert deleted.deleted == {"country": 2}  # both values' entities (the learning marker stays)
    again = run(detector, [signin(4, 0)], first_sequence=4)
    assert len(again.alerts) == 1 and again.alerts[0].alert_id not in {first.alerts[0].alert_id,
                                                                       back.alerts[0].alert_id}


def test_a_body_that_is_not_a_normalized_event_is_dead_lettered_and_the_batch_goes_on(
        tables: Tables, burst: Rule) -> None:
    detector = tables.detector([burst])
    good = [orjson.dumps(item) for item in deletes(10)]
    bodies = [b"not json", b"[1, 2]", orjson.dumps({"event_id": "x", "time": "yesterday"}), *good]
    report = detect_batch(batch_of(bodies), detector)
    assert report.dead_letters == 3 and len(report.alerts) == 1
    assert isinstance(detector.dead_letters, InMemoryDeadLetterStore)
    assert [letter.sequence_number for letter in detector.dead_letters.letters] == [0, 1, 2]
    assert detector.dead_letters.letters[2].reason.startswith("not a normalized event: unrecognized time")


def batch_of(bodies: list[bytes]) -> list[tuple[bytes, Position]]:
    return bodies_with_positions(trigger_batch(bodies, "0"))


def test_a_rule_that_fails_on_an_event_does_not_stop_the_others(tables: Tables, burst: Rule, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    fragile = rule_from(tmp_path, BURST_RULE.replace("burst", "fragile"))
    object.__setattr__(fragile.members[0], "selects", lambda item: 1 / 0)
    report = run(tables.detector([fragile, burst]), deletes(10))
    assert report.rule_errors == 10 and len(report.alerts) == 1
    assert 'rule fragile failed on event "evt-0"' in caplog.text


def test_record_values_cannot_forge_log_lines(tables: Tables, burst: Rule, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    fragile = rule_from(tmp_path, BURST_RULE.replace("burst", "fragile"))
    object.__setattr__(fragile.members[0], "selects", lambda item: 1 / 0)
    forged = "x\nCRITICAL stormwatch: all alerts dismissed by admin\u202e"
    run(tables.detector([fragile]), [event | {"event_id": forged} for event in deletes(1)])
    [message] = [record.getMessage() for record in caplog.records if record.getMessage().startswith("rule ")]
    assert message == 'rule fragile failed on event "x\\nCRITICAL stormwatch: all alerts dismissed by admin\\u202e"'


def test_a_key_whose_state_cannot_be_updated_is_logged_and_the_batch_goes_on(
        tables: Tables, burst: Rule, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from shared.detect import engine as detect

    def oversized(context: KeyContext, before: KeyState | None, hits: Sequence[Hit]) -> Transition:
        if context.group["actor"] == "huge@contoso.example":
            raise StateTooLargeError("state of 999999 characters exceeds one entity")
        return advance(context, before, hits)

    monkeypatch.setattr(detect, "advance", oversized)
    report = run(tables.detector([burst]), deletes(10) + deletes(3, first=10, actor="huge@contoso.example"))
    assert report.rule_errors == 1 and len(report.alerts) == 1
    assert "rule burst: state of key" in caplog.text and "3 events not counted" in caplog.text


def test_a_stored_state_row_that_cannot_be_read_is_that_key_s_dead_letter_not_an_endless_retry(
        tables: Tables, burst: Rule) -> None:
    run(tables.detector([burst]), deletes(3, actor="edited@contoso.example"))
    [(table, row)] = [(table, entity) for table in map(tables.service().get_table_client, tables.state_table_names())
                      for entity in table.list_entities() if "edited" in entity.get("group", "")]
    table.upsert_entity({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], "state": "{edited by hand"},
                        mode=UpdateMode.REPLACE)
    fresh = tables.detector([burst])  # a new instance: nothing cached, the row is read
    report = run(fresh, deletes(10, first=100) + deletes(2, first=200, actor="edited@contoso.example"))
    assert report.rule_errors == 1 and report.dead_letters == 2 and len(report.alerts) == 1


def test_match_rules_without_state_alert_per_event_and_repeat_nothing(tables: Tables, tmp_path: Path) -> None:
    rule = rule_from(tmp_path, """
        title: Delete in development
        name: dev-delete
        id: 5e1f0000-0000-4000-8000-000000000004
        description: test
        level: low
        logsource: {product: azure}
        detection: {deleted: {action: delete, subscription_id: DEVELOPMENT}, condition: deleted}
        """.replace("DEVELOPMENT", DEVELOPMENT))
    detector = tables.detector([rule])
    events = deletes(3, subscription_id=DEVELOPMENT) + deletes(2, first=3)
    first = run(detector, events)
    assert len(first.alerts) == 3 and first.keys_touched == 0 and first.state_writes == 0
    assert run(detector, events).alerts == []


# --- the replay command -----------------------------------------------------------------------------


def replay(*args: str, connection_string: str, tables: Tables,
           extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("STORMWATCH_")}
    env.update(STORMWATCH_STORAGE_CONNECTION_STRING=connection_string, STORMWATCH_STATE_TABLE=tables.state,
               STORMWATCH_ALERTS_TABLE=tables.alerts, **(extra or {}))
    return subprocess.run([sys.executable, "-m", "shared", "replay", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def entity_etags(tables: Tables) -> dict[tuple[str, str, str], str]:
    service = tables.service()
    return {(name, row["PartitionKey"], row["RowKey"]): str(row.metadata["etag"])
            for name in tables.state_table_names() for row in service.get_table_client(name).list_entities()}


def test_replay_prints_only_new_alerts_and_a_second_replay_changes_nothing(
        tables: Tables, azurite_instance: azurite.Azurite) -> None:
    files = [str(SAMPLES / "activity/ordinary-day.json"), str(SAMPLES / "attack/delete-spike.json"),
             str(SAMPLES / "activity/logprofiles-write.json")]
    first = replay(*files, connection_string=azurite_instance.connection_string, tables=tables)
    assert first.returncode == 0, first.stderr
    alerts = [orjson.loads(line) for line in first.stdout.splitlines()]
    assert sorted(alert["rule_id"] for alert in alerts) == [
        "activity-log-profile-changed", "delete-spike-per-caller", "keyvault-deleted",
        "log-analytics-workspace-deleted", "storage-account-keys-listed"]
    assert "3 inputs, 68 records" in first.stderr and "5 new alerts" in first.stderr
    etags = entity_etags(tables)
    second = replay(*files, connection_string=azurite_instance.connection_string, tables=tables)
    assert second.returncode == 0 and second.stdout == ""
    assert "0 new alerts (5 raised before)" in second.stderr
    assert entity_etags(tables) == etags  # not one state entity was written again
    fresh = replay("--fresh", *files, connection_string=azurite_instance.connection_string, tables=tables)
    assert [orjson.loads(line)["alert_id"] for line in fresh.stdout.splitlines()] == [a["alert_id"] for a in alerts]


def test_replay_reads_json_lines_from_stdin(tables: Tables, azurite_instance: azurite.Azurite) -> None:
    bodies = b"\n".join(orjson.dumps({"records": [record]}) for record in
                        orjson.loads((SAMPLES / "attack/delete-spike.json").read_bytes())["records"])
    env = {key: value for key, value in os.environ.items() if not key.startswith("STORMWATCH_")}
    env.update(STORMWATCH_STORAGE_CONNECTION_STRING=azurite_instance.connection_string,
               STORMWATCH_STATE_TABLE=tables.state, STORMWATCH_ALERTS_TABLE=tables.alerts)
    done = subprocess.run([sys.executable, "-m", "shared", "replay"], input=bodies, cwd=REPO, env=env,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(line)["rule_id"] for line in done.stdout.splitlines()] == [
        "keyvault-deleted", "delete-spike-per-caller", "log-analytics-workspace-deleted"]


def test_replay_says_in_one_line_when_the_table_endpoint_is_unreachable(tables: Tables) -> None:
    unreachable = emulator_connection_string({"blob": 9, "queue": 9, "table": 9})
    done = replay(str(SAMPLES / "activity/vm-start.json"), connection_string=unreachable, tables=tables)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    [message] = done.stderr.strip().splitlines()
    assert message.startswith("replay: cannot reach the table endpoint http://127.0.0.1:9/devstoreaccount1")


def test_replay_refuses_a_missing_file(tables: Tables, azurite_instance: azurite.Azurite) -> None:
    done = replay("no/such/file.json", connection_string=azurite_instance.connection_string, tables=tables)
    assert done.returncode == 2 and "not a readable file: no/such/file.json" in done.stderr
