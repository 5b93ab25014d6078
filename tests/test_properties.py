"""Property tests: whatever arrives, the batch never crashes and records in = events out + dead letters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clients.eventhubs import Position
from shared.normalize.batch import normalize_bodies
from shared.normalized_event import NormalizedEvent

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


@pytest.mark.parametrize("duration", [1.8446744073709552e19, "1e400", "-1e30"])
def test_a_duration_no_event_can_carry_is_left_out_not_raised(duration: object) -> None:
    """Found by the property above: `durationMs` past 64 bits made encoding the event raise."""
    record = {"time": "2026-11-01T10:00:00Z", "category": "Administrative", "durationMs": duration,
              "operationName": "MICROSOFT.COMPUTE/VIRTUALMACHINES/START/ACTION"}
    result = normalize_bodies([(orjson.dumps({"records": [record]}), Position("0", 0))])
    [event] = [orjson.loads(output.body) for output in result.events]
    assert "duration_ms" not in (event["details"] or {})
