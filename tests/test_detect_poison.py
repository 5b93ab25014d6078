"""Issue 14, detect side: no value a record carries can make detect_fn raise or retry forever.

Storage is the session's Azurite (its real 400s for bad keys and oversized properties); outages are a
closed port and a real local HTTP server answering 503 and 429. Only the alerts hub is in process.
"""

from __future__ import annotations

import base64
import http.server
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.cli import azurite
from shared.clients import wiring
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.clients.storage import emulator_connection_string, is_outage
from shared.detect.alerts import SUBJECT_FIELDS, Alert, TableAlertStore, alert_entity, subject_of, truncated
from shared.detect.engine import Detector, DetectReport, build_detector, detect_batch
from shared.detect.rules import Rule
from shared.detect.state import MAX_KEY_CHARS, StateTable, TableEntityStore, table_key
from tests.conftest import indexed_functions
from tests.detect_fixtures import BURST_RULE, PRODUCTION, T0, Tables, deletes, event, rule_from, run, tables
from tests.test_normalize_fn import dead_letters_in

__all__ = ["tables"]  # the fixture, used by name

HOSTILE_SUBSCRIPTIONS = ["a#b", "a?b", "a\\b", "a/b", "a\x00b", "a\x1fb\x7f\x85", "a%23b", "%h", "s" * 600,
                         "s" * 600 + "!", "é/𝄞"]


@pytest.fixture
def burst(tmp_path: Path) -> Rule:
    return rule_from(tmp_path, BURST_RULE)


def _table(connection_string: str) -> TableClient:
    table = TableServiceClient.from_connection_string(connection_string).get_table_client(
        f"p{uuid.uuid4().hex[:12]}")
    table.create_table()
    return table


# --- is_outage: the one split between "retry" and "dead-letter" -------------------------------------

def _rejection(table: TableClient, entity: dict[str, Any]) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as caught:
        table.create_entity(entity)
    return caught.value


def test_deterministic_rejections_by_table_storage_are_not_outages(azurite_instance: azurite.Azurite) -> None:
    table = _table(azurite_instance.connection_string)
    bad_key = _rejection(table, {"PartitionKey": "a#b", "RowKey": "r"})
    too_large = _rejection(table, {"PartitionKey": "p", "RowKey": "r", "summary": "x" * 40_000})
    assert bad_key.status_code == too_large.status_code == 400
    assert not is_outage(bad_key) and not is_outage(too_large)
    assert not is_outage(ValueError("raised before any request was sent"))


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_POST(self) -> None:  # the Table client's insert
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet: the test asserts on what the client raises."""


@pytest.fixture(params=[503, 429])
def failing_endpoint(request: pytest.FixtureRequest) -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 that answers every request with one status."""
    handler = type("Answer", (_Answer,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _client_of(port: int) -> TableClient:
    connection = emulator_connection_string({"blob": port, "queue": port, "table": port})
    return TableServiceClient.from_connection_string(connection, retry_total=0).get_table_client("t")


def test_server_errors_and_throttling_are_outages(failing_endpoint: int) -> None:
    with pytest.raises(HttpResponseError) as caught:
        _client_of(failing_endpoint).create_entity({"PartitionKey": "p", "RowKey": "r"})
    assert caught.value.status_code in (503, 429) and is_outage(caught.value)


def test_no_connection_is_an_outage() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Exception) as caught:
        _client_of(port).create_entity({"PartitionKey": "p", "RowKey": "r"})
    assert is_outage(caught.value)


# --- table keys from record values -----------------------------------------------------------------

def test_table_keys_are_valid_and_injective_for_any_text(azurite_instance: azurite.Azurite) -> None:
    table = _table(azurite_instance.connection_string)
    keys = [table_key(value) for value in HOSTILE_SUBSCRIPTIONS]
    assert len(set(keys)) == len(keys) and all(len(key) <= MAX_KEY_CHARS for key in keys)
    for key in keys:
        table.upsert_entity({"PartitionKey": key, "RowKey": "r"}, mode=UpdateMode.REPLACE)
    assert {row["PartitionKey"] for row in table.list_entities()} == set(keys)
    assert table_key(PRODUCTION) == PRODUCTION and table_key("tenant") == "tenant"  # what is stored today


def _with_inventory(tables: Tables, rules: list[Rule], publisher: InProcessPublisher | None = None) -> Detector:
    return build_detector(rules, tables.service(), state_table=tables.state, alerts_table=tables.alerts,
                          publisher=publisher or InProcessPublisher(), alerts_hub="alerts",
                          dead_letters=InMemoryDeadLetterStore(), inventory=f"inv{uuid.uuid4().hex[:12]}")


def test_hostile_subscription_ids_are_counted_apart_in_the_inventory(tables: Tables, burst: Rule) -> None:
    detector = _with_inventory(tables, [burst])
    events = [event(index, T0, subscription_id=value) for index, value in enumerate(HOSTILE_SUBSCRIPTIONS)]
    report = run(detector, events)
    assert report.dead_letters == 0
    assert detector.inventory is not None
    day = T0.date()
    stored = {key.partition_key: state.totals["events"] for key, state in detector.inventory.read(None, day, day)}
    readable = {value for value in HOSTILE_SUBSCRIPTIONS if len(value) <= MAX_KEY_CHARS}
    assert readable <= set(stored) and len(stored) == len(HOSTILE_SUBSCRIPTIONS)
    assert set(stored.values()) == {1}
    for value in HOSTILE_SUBSCRIPTIONS:
        [(key, state)] = detector.inventory.read(value, day, day)
        assert state.totals["events"] == 1 and (key.partition_key == value or len(value) > MAX_KEY_CHARS)


# --- alerts: cut to fit, stored before published, rejected ones dead-lettered ----------------------

def test_a_40000_character_caller_raises_one_stored_alert_with_its_values_cut(tables: Tables, burst: Rule) -> None:
    caller = "m" * 40_000
    publisher = InProcessPublisher()
    detector = tables.detector([burst], publisher=publisher)
    report = run(detector, deletes(10, actor=caller))
    [alert] = report.alerts
    assert report.dead_letters == 0 and tables.count_of(burst, caller) == 10
    assert alert.group["actor"] == truncated(caller, 4_000) and alert.group["actor"].endswith(
        f"…[truncated {40_000 - 3_960:,} chars]")
    assert "…[truncated" in alert.summary and len(alert.summary) <= 4_000
    stored = detector.alerts.get(alert.alert_id) if isinstance(detector.alerts, TableAlertStore) else None
    assert stored == alert
    assert [orjson.loads(item.body)["alert_id"] for item in publisher.hubs["alerts"]] == [alert.alert_id]
    assert run(detector, deletes(10, actor=caller)).alerts == []


class _UnboundedAlertStore(TableAlertStore):
    """An alert row storage refuses (a 40,000-character property): stands for any 4xx on one alert row."""

    def save(self, alert: Alert, subject: Mapping[str, Any] | None = None) -> None:
        self.ensure_table()
        self.table.upsert_entity({**alert_entity(alert), "padding": "x" * 40_000}, mode=UpdateMode.REPLACE)


def test_an_alert_row_storage_rejects_is_published_and_dead_lettered_not_retried(
        tables: Tables, burst: Rule) -> None:
    publisher = InProcessPublisher()
    detector = tables.detector([burst], publisher=publisher)
    detector.alerts = _UnboundedAlertStore(tables.service().get_table_client(tables.alerts))
    report = run(detector, deletes(10))
    [alert] = report.alerts
    assert report.dead_letters == 1 and tables.alert_ids() == set()
    assert isinstance(detector.dead_letters, InMemoryDeadLetterStore)
    [letter] = detector.dead_letters.letters
    assert letter.reason.startswith("alert not stored: HttpResponseError") and letter.partition == "0"
    assert Alert.model_validate_json(base64.b64decode(letter.original)) == alert
    assert [orjson.loads(item.body)["alert_id"] for item in publisher.hubs["alerts"]] == [alert.alert_id]


class _PaddedEntityStore(TableEntityStore):
    """A state row storage refuses for what it holds: stands for any 4xx on one state entity."""

    def insert(self, properties: dict[str, Any]) -> str:
        return super().insert({**properties, "padding": "x" * 40_000})


def test_a_state_row_storage_rejects_dead_letters_its_events_and_the_batch_goes_on(
        tables: Tables, burst: Rule) -> None:
    detector = tables.detector([burst])
    detector.state = StateTable(_PaddedEntityStore(tables.service().get_table_client(tables.state)))
    events = deletes(10)
    report = run(detector, events)
    assert report.rule_errors == 1 and report.dead_letters == 10 and report.alerts == []
    assert isinstance(detector.dead_letters, InMemoryDeadLetterStore)
    letters = detector.dead_letters.letters
    assert [orjson.loads(base64.b64decode(letter.original)) for letter in letters] == events
    assert {letter.reason.split(": ")[0] for letter in letters} == {"rule burst"}
    assert [letter.sequence_number for letter in letters] == list(range(10))


# --- time sanity -----------------------------------------------------------------------------------

def _run_enqueued(detector: Detector, events: list[dict[str, Any]], enqueued: Any, first_sequence: int) -> DetectReport:
    bodies = [orjson.dumps(item) for item in events]
    return detect_batch(bodies_with_positions(trigger_batch(bodies, "0", first_sequence, enqueued)), detector)


def test_a_delete_dated_2099_cannot_silence_a_real_spike_by_the_same_caller(tables: Tables, burst: Rule) -> None:
    detector = tables.detector([burst])
    forged = event(1, T0.replace(year=2099))
    first = _run_enqueued(detector, [forged], T0, first_sequence=0)
    assert first.alerts == []
    spike = deletes(12, start=T0 + timedelta(minutes=1), every=timedelta(seconds=20), first=100)
    second = _run_enqueued(detector, spike, T0 + timedelta(minutes=6), first_sequence=1)
    [alert] = second.alerts
    assert second.future_dated == 0 and second.too_late == 0
    assert alert.group == {"actor": "mallory@contoso.example"} and alert.last_seen < T0 + timedelta(hours=1)
    assert first.future_dated == 1  # reported on the batch line


def test_an_event_within_the_skew_keeps_its_own_time(tables: Tables, burst: Rule) -> None:
    detector = tables.detector([burst])
    spike = deletes(10, start=T0 + timedelta(minutes=50), every=timedelta(seconds=1))
    [alert] = _run_enqueued(detector, spike, T0, first_sequence=0).alerts
    assert alert.first_seen == T0 + timedelta(minutes=50)



# --- the registered detect_fn over generated hostile events ----------------------------------------

HOSTILE_RULES = {  # every valid event raises an alert and touches a state key, with record values in both
    "echo.yaml": """
title: Echo
name: echo
id: 5e1f0000-0000-4000-8000-000000000005
description: one alert per event, its values in group and summary
level: low
logsource: {product: azure}
detection:
  any: {event_id|re: "."}
  condition: any
group-by: [actor, subscription_id, user_agent]
summary: "{actor} {user_agent} {subscription_id} {operation} {details.note}"
""",
    "count.yaml": BURST_RULE.replace("burst", "count").replace("deleted: {action: delete}",
                                                                       "deleted: {event_id|re: \".\"}")
    .replace("{gte: 10}", "{gte: 1}").replace("group-by: [actor]", "group-by: [actor, user_agent]"),
}

_TEXT = st.one_of(st.text(max_size=40), st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=40),
                  st.sampled_from(["#", "?", "/", "\\", "%", "%h", "\x00", "\u202e", "x" * 40_000, "é" * 600]))
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=20)
_EVENT = st.fixed_dictionaries({
    "event_id": _TEXT.filter(bool), "actor": _TEXT | st.none(), "subscription_id": _TEXT | st.none(),
    "user_agent": _TEXT | st.none(), "operation": _TEXT | st.none(), "details": st.fixed_dictionaries(
        {"note": _JSON}),
    "time": st.sampled_from(["2026-11-27T02:00:00Z", "2099-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
                             "9999-12-31T23:59:59.999999Z", "2026-11-27T02:00:00+14:00"]),
    "source": st.just("activity"), "action": st.just("delete"), "result": st.just("Success")})
_GARBAGE = st.binary(max_size=60).filter(lambda body: not body.strip().startswith(b"{"))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=st.lists(_EVENT, max_size=6), garbage=st.lists(_GARBAGE, max_size=3))
def test_detect_fn_never_raises_and_dead_letters_only_what_is_not_an_event(
        tables: Tables, app_env: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
        events: list[dict[str, Any]], garbage: list[bytes]) -> None:
    rules = tmp_path_factory.mktemp("rules")
    for name, text in HOSTILE_RULES.items():
        (rules / name).write_text(text)
    container = f"dl-{uuid.uuid4().hex[:12]}"
    app_env.setenv("STORMWATCH_RULES_DIR", str(rules))
    app_env.setenv("STORMWATCH_DEADLETTER_CONTAINER", container)
    app_env.setenv("STORMWATCH_INVENTORY_TABLE", f"inv{uuid.uuid4().hex[:12]}")
    wiring.reset()
    bodies = [orjson.dumps(item) for item in events] + garbage
    handler = indexed_functions()["detect"].get_user_function()
    handler(trigger_batch(bodies, "0", 0, T0 + timedelta(minutes=5)))  # never raises: storage is up
    letters = dead_letters_in(container, tables.connection_string) if garbage else []
    assert len(letters) == len(garbage), [letter["reason"] for _, letter in letters]
    assert sorted(base64.b64decode(letter["original"]) for _, letter in letters) == sorted(garbage)


def test_an_alert_subject_fits_one_table_property_whatever_its_event_holds() -> None:
    """Control characters are escaped six to one in JSON: ten fields of them must not make the row unstorable."""
    event = {name: "\x01" * 5_000 for name in SUBJECT_FIELDS}
    assert len(orjson.dumps(subject_of(event, [])).decode()) <= 32_767
