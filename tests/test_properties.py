"""Property tests: whatever arrives, the batch never crashes and records in = events out + dead letters."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from shared.cli import azurite
from shared.clients import wiring
from shared.clients.eventhubs import Position, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.normalize.batch import MAX_BODY_BYTES, MAX_RECORDS_PER_BODY, normalize_bodies
from shared.normalize.mappers import split_body
from shared.normalized_event import NormalizedEvent
from tests.conftest import SAMPLES, indexed_functions
from tests.test_normalize_fn import dead_letters_in
from tests.test_poison import HOSTILE_RECORDS

ENQUEUED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
# Records that look like Azure's, with every field free to hold the wrong type.
field_values = st.one_of(json_values, st.sampled_from([
    "2026-11-01T10:00:00Z", "1/9/2007 9:41:00 AM", "Administrative", "Security", "Policy", "SignInLogs",
    "AuditLogs", "Write", "ManagedIdentitySignInLogs", "203.0.113.9", "/subscriptions/S/resourceGroups/G",
    "/SUBSCRIPTIONS/S/RESOURCEGROUPS/G/PROVIDERS/A.B/c/d/e/f", "Microsoft.PolicyInsights.PolicyStateChanged",
]))
azure_like_records = st.fixed_dictionaries({}, optional={
    key: field_values for key in ("time", "category", "operationName", "resultType", "callerIpAddress",
                                  "resourceId", "level", "Level", "durationMs", "identity", "SystemAlertId",
                                  "eventType", "data", "type", "StartTimeUtc", "tenantId")
} | {"properties": st.one_of(json_values, st.fixed_dictionaries({}, optional={
    key: field_values for key in ("eventCategory", "createdDateTime", "activityDateTime", "status",
                                  "requestbody", "policies", "initiatedBy", "targetResources", "id",
                                  "authenticationDetails", "appliedConditionalAccessPolicies")
}))})
records = st.one_of(json_values, azure_like_records)


def expected_records(document: Any) -> int:
    """Counted without the code under test: an envelope's list, an array's items, else one record."""
    if isinstance(document, dict):
        keys = [key for key in document if key.lower() == "records"]
        if keys:
            inner = document[keys[0]]
            return len(inner) if isinstance(inner, list) else 1
        return 1
    return len(document) if isinstance(document, list) else 1


def check_batch(bodies: list[bytes], expected: int) -> None:
    result = normalize_bodies([(body, Position("0", index)) for index, body in enumerate(bodies)])
    assert result.records_in == expected
    assert len(result.events) + len(result.dead_letters) == expected
    for output in result.events:
        NormalizedEvent.model_validate_json(output.body)
    for letter in result.dead_letters:
        assert letter.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_arbitrary_bytes_never_crash_the_batch(bodies: list[bytes]) -> None:
    expected = 0
    for body in bodies:
        try:
            expected += expected_records(orjson.loads(body.removeprefix(b"\xef\xbb\xbf")))
        except orjson.JSONDecodeError:
            expected += 1
    check_batch(bodies, expected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.builds(lambda items: {"records": items}, st.lists(records, max_size=5)),
    st.lists(records, max_size=5),
    records,
), max_size=4))
def test_arbitrary_json_keeps_in_equal_out_plus_dead(documents: list[Any]) -> None:
    bodies = [orjson.dumps(document) for document in documents]
    check_batch(bodies, sum(expected_records(document) for document in documents))


# --- the real functions: normalize_fn (dead letters in Azurite) then detect_fn, over hostile bodies ---------

SAMPLE_RECORDS = [record for path in sorted(SAMPLES.glob("*/*.json")) if path.parent.name != "bad"
                  for record in split_body(path.read_bytes()) if isinstance(record, dict)]
PLACEHOLDER = "\x00hostile\x00"


def nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth


def value_chain(depth: int) -> str:
    return '{"value":' * depth + '"Microsoft.Compute/virtualMachines/delete"' + "}" * depth


# JSON text put in place of one field's value: each kind once broke (or could break) a function.
hostile_values = st.one_of(
    st.integers(1, 1020).map(nested_lists),
    st.integers(1, 1020).map(value_chain),
    st.integers(1, 1020).map(lambda depth: orjson.dumps(nested_lists(depth)).decode()),  # JSON in a string
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "123456789012345678901234567890",
                     "18446744073709551616", "-9223372036854775809", '"inf"', '"-1e999"', '"nan"',
                     '"123456789012345678901234567890"', "1.7976931348623157e308", "-0.0", "true", "{}", "[]"]),
    st.sampled_from(["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "12/31/9999 11:59:59 PM -12:00",
                     "1/1/0001 12:00:00 AM +13:59", "٢٠٢٦-١١-٠١T10:00:00Z", "١/٩/٢٠٠٧ ٩:٤١:٠٠ AM",
                     "2026-11-01T10:00:00.1234567891234Z", "2026-13-45T25:61:61Z", "99999-01-01T00:00:00Z",
                     "2026-11-01T10:00:00+99:99", "\u202eevil\u202c", "\u202e", "\ud7ff\ue000\U0010ffff"])
    .map(lambda text: orjson.dumps(text).decode()),
    st.text(max_size=40).map(lambda text: orjson.dumps(text).decode()),  # non-ASCII everywhere
    st.integers(100_000, 300_000).map(lambda size: '"' + "A" * size + '"'),  # huge strings
    st.integers(1_000, 20_000).map(lambda size: "[" + "0," * size + "0]"),  # huge arrays
    json_values.map(lambda value: orjson.dumps(value).decode()),  # wrong types
)


@st.composite
def hostile_records(draw: st.DrawFn) -> str:
    """A real sample record with one field, top-level or under `properties`, holding a hostile value."""
    record = dict(draw(st.sampled_from(SAMPLE_RECORDS)))
    for _ in range(draw(st.integers(1, 3))):
        properties = record.get("properties")
        if isinstance(properties, dict) and properties and draw(st.booleans()):
            record["properties"] = {**properties, draw(st.sampled_from(sorted(properties))): PLACEHOLDER}
        else:
            record[draw(st.sampled_from(sorted(record)))] = PLACEHOLDER
    text = orjson.dumps(record).decode()
    while (placeholder := orjson.dumps(PLACEHOLDER).decode()) in text:
        text = text.replace(placeholder, draw(hostile_values), 1)
    return text


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    records = draw(st.lists(st.one_of(hostile_records(), st.sampled_from(SAMPLE_RECORDS).map(
        lambda record: orjson.dumps(record).decode())), min_size=1, max_size=4))
    body = ('{"records": [' + ",".join(records) + "]}" if draw(st.booleans())
            else "[" + ",".join(records) + "]").encode()
    damage = draw(st.sampled_from(["none"] * 4 + ["bom", "utf16", "invalid utf-8", "truncated", "huge array"]))
    if damage == "bom":
        return b"\xef\xbb\xbf" + body
    if damage == "utf16":
        return body.decode().encode("utf-16")
    if damage == "invalid utf-8":
        cut = draw(st.integers(0, len(body)))
        return body[:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])) + body[cut:]
    if damage == "truncated":
        return body[:draw(st.integers(0, len(body) - 1))]
    if damage == "huge array":
        return b"[" + b"{}," * MAX_RECORDS_PER_BODY + b"{}]"
    return body


def expected_from_body(body: bytes) -> int:
    """Records in as the README states it, computed without the code under test: a body that is not
    JSON or is past a cap counts as one (its one dead letter)."""
    if len(body) > MAX_BODY_BYTES:
        return 1
    try:
        count = expected_records(orjson.loads(body.removeprefix(b"\xef\xbb\xbf")))
    except orjson.JSONDecodeError:
        return 1
    return 1 if count > MAX_RECORDS_PER_BODY else count


HOSTILE_SETTINGS = settings(
    max_examples=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
                           HealthCheck.large_base_example])
EVERY_KNOWN_CLASS = [b"[" + b",".join(record.encode() for record in HOSTILE_RECORDS.values()) + b"]"]


def run_normalize_fn(bodies: list[bytes], app_env: pytest.MonkeyPatch, connection_string: str) -> list[bytes]:
    """The registered normalize_fn over one batch, checked: records in = events out + dead letters (read
    back from Azurite), each letter with the bytes to re-drive it. Returns the published events."""
    container = f"dl-{uuid.uuid4().hex[:12]}"
    app_env.setenv("STORMWATCH_DEADLETTER_CONTAINER", container)
    wiring.reset()
    indexed_functions()["normalize"].get_user_function()(trigger_batch(bodies, "0", 0, ENQUEUED))
    publisher = wiring.publisher()
    assert isinstance(publisher, InProcessPublisher)
    published = [output.body for output in publisher.hubs.get("normalized", [])]
    letters = dead_letters_in(container, connection_string)
    assert len(published) + len(letters) == sum(expected_from_body(body) for body in bodies)
    for _, letter in letters:  # each keeps the bytes to re-drive: its body, or its record as JSON
        assert letter["reason"]
        original, body = base64.b64decode(letter["original"]), bodies[letter["sequence_number"]]
        if letter["record_index"] is None:
            assert original == body
        else:
            assert orjson.loads(original) == split_body(body)[letter["record_index"]]
    for event in published:  # parsed as detect_fn does (orjson): pydantic's own JSON parser stops at ~200 levels
        NormalizedEvent.model_validate(orjson.loads(event))
    return published


@HOSTILE_SETTINGS
@given(bodies=st.lists(hostile_bodies(), min_size=1, max_size=6))
@example(bodies=EVERY_KNOWN_CLASS)
def test_hostile_bodies_through_normalize_fn_keep_records_in_equal_events_out_plus_dead_letters(
        bodies: list[bytes], app_env: pytest.MonkeyPatch, azurite_instance: azurite.Azurite) -> None:
    run_normalize_fn(bodies, app_env, azurite_instance.connection_string)


@settings(HOSTILE_SETTINGS, max_examples=15, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(bodies=st.lists(hostile_bodies(), min_size=1, max_size=6))
@example(bodies=EVERY_KNOWN_CLASS)
def test_what_normalize_fn_publishes_from_hostile_bodies_never_makes_detect_fn_raise(
        bodies: list[bytes], app_env: pytest.MonkeyPatch, azurite_instance: azurite.Azurite) -> None:
    published = run_normalize_fn(bodies, app_env, azurite_instance.connection_string)
    suffix = uuid.uuid4().hex[:12]  # fresh state per example, so that each example stands alone
    for setting in ("STATE_TABLE", "ALERTS_TABLE", "INVENTORY_TABLE"):
        app_env.setenv(f"STORMWATCH_{setting}", f"{setting.split('_')[0].lower()}{suffix}")
    wiring.reset()
    indexed_functions()["detect"].get_user_function()(trigger_batch(published, "0", 0))


@pytest.mark.parametrize("duration", [1.8446744073709552e19, "1e400", "-1e30"])
def test_a_duration_no_event_can_carry_is_left_out_not_raised(duration: object) -> None:
    """Found by the property above: `durationMs` past 64 bits made encoding the event raise."""
    record = {"time": "2026-11-01T10:00:00Z", "category": "Administrative", "durationMs": duration,
              "operationName": "MICROSOFT.COMPUTE/VIRTUALMACHINES/START/ACTION"}
    result = normalize_bodies([(orjson.dumps({"records": [record]}), Position("0", 0))])
    [event] = [orjson.loads(output.body) for output in result.events]
    assert "duration_ms" not in (event["details"] or {})
