"""Unit tests of the pure reading helpers: times, resource ids, IPs, levels, envelopes, dispatch."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.normalize.mappers import MappingError, map_record, split_body
from shared.normalize.mappers.common import result_word, vendor_result
from shared.normalize.mappers.resource_id import parse_resource_id
from shared.values import format_time, parse_time, severity, utc_text, valid_ip
from tests.conftest import SAMPLES

NINE_FORTY_ONE = datetime(2007, 1, 9, 9, 41, tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "01/09/2007 09:41:00", "1/9/2007 09:41:00", "01/09/2007 09:41:00 AM", "1/9/2007 9:41:00 AM",
    "1/9/2007 10:41:00 AM +01:00", "2007-01-09T09:41:00", "2007-01-09T09:41:00Z",
    "2007-01-09T11:41:00+02:00", "2007-01-09T04:41:00-05:00", "2007-01-09T09:41:00.000000000Z",
])
def test_times_in_every_azure_format_become_utc(text: str) -> None:
    assert parse_time(text) == NINE_FORTY_ONE


@pytest.mark.parametrize(("text", "expected"), [
    ("2007-01-09T09:41:00.2Z", 200000),
    ("2007-01-09T09:41:00.22Z", 220000),
    ("2007-01-09T09:41:00.6816663Z", 681666),
    ("2007-01-09T09:41:00.535404056Z", 535404),
    ("2007-01-09T10:41:00.992099+01:00", 992099),
])
def test_fraction_digits_zero_to_nine_are_kept_to_microseconds(text: str, expected: int) -> None:
    moment = parse_time(text)
    assert moment.microsecond == expected
    assert moment.replace(microsecond=0) == NINE_FORTY_ONE


def test_pm_and_midnight_hours() -> None:
    assert parse_time("1/9/2007 9:41:00 PM").hour == 21
    assert parse_time("1/9/2007 12:05:00 AM").hour == 0
    assert parse_time("1/9/2007 12:05:00 PM").hour == 12


@pytest.mark.parametrize("bad", ["", "yesterday", "13/45/2007 10:00:00", "2007-02-30T00:00:00Z", 17, None])
def test_unusable_times_raise_a_mapping_error_with_the_reason(bad: object) -> None:
    with pytest.raises(MappingError):
        parse_time(bad)


def test_format_time_is_iso_utc_with_z() -> None:
    assert format_time(NINE_FORTY_ONE) == "2007-01-09T09:41:00Z"
    assert format_time(parse_time("2007-01-09T09:41:00.5Z")) == "2007-01-09T09:41:00.500000Z"


def test_resource_id_with_child_type_in_any_casing() -> None:
    parsed = parse_resource_id("/SUBSCRIPTIONS/A1B2C3D4-1111-4111-8111-000000000001/RESOURCEGROUPS/RG-Prod"
                               "/PROVIDERS/Microsoft.Network/networkSecurityGroups/nsg-web/securityRules/EXHAUSTPORT")
    assert parsed.subscription_id == "a1b2c3d4-1111-4111-8111-000000000001"
    assert parsed.resource_group == "RG-Prod"
    assert parsed.resource_provider == "Microsoft.Network"
    assert parsed.resource_type == "Microsoft.Network/networkSecurityGroups/securityRules"
    assert parsed.resource_name == "EXHAUSTPORT"


def test_extension_resource_takes_the_last_provider() -> None:
    parsed = parse_resource_id("/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/kv"
                               "/providers/microsoft.insights/diagnosticSettings/to-siem")
    assert (parsed.resource_type, parsed.resource_name) == (
        "microsoft.insights/diagnosticSettings", "to-siem")
    assert parsed.resource_group == "g"


def test_subscription_resource_group_and_tenant_level_ids() -> None:
    assert parse_resource_id("/subscriptions/ABC").resource_type == "Microsoft.Resources/subscriptions"
    group = parse_resource_id("/subscriptions/abc/resourceGroups/rg-x")
    assert (group.resource_type, group.resource_name) == ("Microsoft.Resources/resourceGroups", "rg-x")
    tenant = parse_resource_id("/tenants/t/providers/Microsoft.aadiam")
    assert (tenant.subscription_id, tenant.resource_provider, tenant.resource_name) == (
        None, "Microsoft.aadiam", None)
    assert parse_resource_id("/").resource_type is None


@pytest.mark.parametrize(("value", "expected"), [
    ("203.0.113.9", "203.0.113.9"), ("203.0.113.9:443", "203.0.113.9"), ("2001:DB8::1", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"), ("<null>", None), ("NotSet", None), ("", None), (None, None),
    ("999.1.1.1", None), (12, None),
])
def test_ip_addresses_are_validated(value: object, expected: str | None) -> None:
    assert valid_ip(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("Informational", "Informational"), ("Information", "Informational"), ("Verbose", "Informational"),
    ("warning", "Warning"), ("Error", "Error"), ("CRITICAL", "Critical"), (4, "Informational"),
    ("2", "Error"), ("High", "Critical"), ("Low", "Warning"), ("odd", None), (None, None),
])
def test_levels_map_to_four_severities(value: object, expected: str | None) -> None:
    assert severity(value) == expected


def test_envelope_array_object_and_bom_are_all_accepted() -> None:
    record = {"time": "2026-11-01T00:00:00Z", "category": "Administrative"}
    assert split_body(orjson.dumps({"records": [record, record]})) == [record, record]
    assert split_body(orjson.dumps({"Records": [record]})) == [record]
    assert split_body(orjson.dumps([record])) == [record]
    assert split_body(orjson.dumps(record)) == [record]
    assert split_body(b"\xef\xbb\xbf" + orjson.dumps({"records": [record]})) == [record]


@pytest.mark.parametrize(("body", "reason"), [
    (b"{\"records\": [", "not valid JSON"), (b"{\"records\": {}}", "'records' is not a list"),
    (b"42", "neither an object nor an array"), (b"\xff\xfe", "not valid JSON"),
])
def test_unusable_bodies_raise_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MappingError, match=reason):
        split_body(body)


def test_real_category_comes_from_event_category_not_the_operation_type() -> None:
    record = {"time": "2026-11-01T00:00:00Z", "category": "Write",
              "operationName": "Microsoft.Web/sites/write",
              "properties": {"eventCategory": "Administrative", "eventDataId": "e-1"}}
    event = map_record(record)
    assert (event["source"], event["category"], event["action"]) == ("activity", "Administrative",
                                                                    "create_or_update")
    security = {**record, "properties": {"eventCategory": "Security", "eventDataId": "e-2"}}
    assert map_record(security)["source"] == "defender"


def test_operation_type_category_without_event_category_is_administrative() -> None:
    event = map_record({"time": "2026-11-01T00:00:00Z", "category": "Delete",
                        "operationName": "Microsoft.Compute/disks/delete"})
    assert (event["category"], event["action"], event["common_event"]) == (
        "Administrative", "delete", "Object Deleted/Removed")


def test_records_without_an_id_get_a_stable_content_hash() -> None:
    record = {"time": "2026-11-01T00:00:00Z", "category": "AuditEvent", "operationName": "SecretGet"}
    reordered = {"operationName": "SecretGet", "category": "AuditEvent", "time": "2026-11-01T00:00:00Z"}
    assert map_record(record)["event_id"] == map_record(reordered)["event_id"]
    assert map_record(record)["event_id"] != map_record({**record, "operationName": "SecretList"})["event_id"]


def test_policy_state_event_grid_events_map_to_policy() -> None:
    event = map_record({
        "id": "evt-1", "eventType": "Microsoft.PolicyInsights.PolicyStateChanged",
        "subject": "/subscriptions/ABC/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1",
        "eventTime": "2026-11-01T10:00:00Z",
        "data": {"timestamp": "2026-11-01T09:59:00Z", "complianceState": "NonCompliant",
                 "policyAssignmentId":
                     "/subscriptions/abc/providers/Microsoft.Authorization/policyAssignments/a",
                 "policyDefinitionId": "/providers/Microsoft.Authorization/policyDefinitions/d"},
    })
    assert (event["source"], event["result"], event["common_event"]) == ("policy", "NonCompliant",
                                                                         "Policy Violation")
    assert event["time"] == "2026-11-01T09:59:00Z"
    assert event["subscription_id"] == "abc"
    assert event["policy_definition"].endswith("/d")


@pytest.mark.parametrize("record", [
    {"time": ["not", "a", "time"], "category": "Administrative"},
    {"category": "SignInLogs", "properties": {"createdDateTime": 5}},
    {"category": "AuditLogs", "properties": "not an object"},
])
def test_wrong_types_become_mapping_errors_not_crashes(record: dict[str, object]) -> None:
    with pytest.raises(MappingError):
        map_record(record)


@pytest.mark.parametrize("text", [
    "2026-11-12T14:03:11.4620317Z", "2026-11-12T14:03:11Z", "2026-11-12T14:03:11.0000000Z", "2026-11-12T14:03:11.5Z",
    "2026-11-12T14:03:11.123456789Z", "2026-11-12T15:03:11+01:00", "11/12/2026 2:03:11 PM",
])
def test_fast_utc_path_agrees_with_the_datetime_round_trip(text: str) -> None:
    assert utc_text(text) == format_time(parse_time(text))


@pytest.mark.parametrize("bad", ["2026-02-30T10:00:00Z", "2026-11-12T24:00:00Z", "2026-11-12T10:60:00Z"])
def test_fast_utc_path_still_rejects_impossible_times(bad: str) -> None:
    with pytest.raises(MappingError):
        utc_text(bad)


# Times built from parts that are valid or just out of range (Feb 29 and 30, hour 24, second 60), with
# the fractions and zones the fast paths take (`.4620317Z`, `.4620317+00:00`) and their near misses
# (a week date, other separators).
azure_times = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    st.sampled_from(["2026", "2024", "0001", "9999", "2026-W46"]),
    st.sampled_from(["01", "02", "11", "12", "00", "13"]),
    st.sampled_from(["01", "28", "29", "30", "31", "00", "32"]), st.sampled_from(["T", " ", "t"]),
    st.sampled_from(["00", "14", "23", "24"]),
    st.sampled_from(["00", "03", "59", "60"]), st.sampled_from(["00", "11", "59", "60"]),
    st.sampled_from(["", ".4620317", ".0000000", ".0000009", ".462031", ".5", ".123456789", ".46203171"])
    | st.text("0123456789", min_size=1, max_size=9).map(".{}".format),
    st.sampled_from(["Z", "+00:00", "+0000", "+01:00", "-00:00", "", "z", "Z ", "+00:00x"]),
)


@settings(max_examples=500)
@given(azure_times)
def test_every_fast_utc_path_agrees_with_the_datetime_round_trip(text: str) -> None:
    try:
        expected: str | None = format_time(parse_time(text))
    except MappingError:
        expected = None
    try:
        actual: str | None = utc_text(text)
    except MappingError:
        actual = None
    assert actual == expected


def _records(relative: str) -> list[dict[str, object]]:
    return split_body((SAMPLES / relative).read_bytes())


@pytest.mark.parametrize("relative", ["activity/nsg-rule-write.json", "signin/signin-failure.json",
                                      "audit/user-created.json", "resource/keyvault-audit.json"])
@pytest.mark.parametrize("spell", [str.upper, str.lower])
def test_top_level_keys_are_read_in_any_casing(relative: str, spell: object) -> None:
    """Mappers read Azure's documented spellings; other casings are renamed to them, not missed.
    (Resource logs carry no id: theirs hashes the record as written, so it differs by design.)"""
    assert callable(spell)
    for record in _records(relative):
        respelled = map_record({spell(key): value for key, value in record.items()})
        original = map_record(record)
        if relative.startswith("resource/"):
            respelled["event_id"] = original["event_id"]
        assert respelled == original


@pytest.mark.parametrize("written", ["Administrative", "administrative", "ADMINISTRATIVE", " Administrative "])
def test_the_category_is_recognised_however_it_is_written(written: str) -> None:
    record = _records("activity/vm-start.json")[0]
    properties = record["properties"]
    assert isinstance(properties, dict)
    event = map_record({**record, "category": "Write", "properties": {**properties, "eventCategory": written}})
    assert (event["source"], event["category"]) == ("activity", "Administrative")


def test_a_rest_page_is_split_into_its_items_and_other_objects_with_value_stay_whole() -> None:
    page = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#auditLogs/signIns",
            "value": [{"id": "a"}, {"id": "b"}], "@odata.nextLink": "https://graph.microsoft.com/next"}
    assert split_body(orjson.dumps(page)) == [{"id": "a"}, {"id": "b"}]
    assert split_body(orjson.dumps({"value": [], "nextLink": None})) == []
    record = {"value": [1], "time": "2026-11-24T13:00:00Z"}
    assert split_body(orjson.dumps(record)) == [record]


@pytest.mark.parametrize(("written", "result"), [
    ("Succeeded", "Success"), ("Succeeded.", "Success"), ("succeeded", "Success"), ("Failed", "Failure"),
    ("failure", "Failure"), ("Started", "Start"), ("Accepted", "Accept"), ("inProgress", "In Progress"),
    ("Activated", "Active"), ("new", "Active"), ("Success", "Success"), ("Start", "Start"),
    ("Updated", "Updated"), ("custom", "Custom"), ("None", None), ("", None), (None, None),
])
def test_results_in_one_vocabulary(written: str | None, result: str | None) -> None:
    assert result_word(written) == result


def test_the_vendor_spelling_is_kept_only_when_more_than_its_casing_changed() -> None:
    assert vendor_result("Succeeded.", "Success") == "Succeeded."
    assert vendor_result("success", "Success") is None
    assert vendor_result("Success", "Success") is None


def test_an_audit_record_under_the_policy_category_is_an_audit_event() -> None:
    record = {"time": "2026-11-24T12:09:47Z", "category": "Policy",
              "properties": {"activityDisplayName": "Update conditional access policy", "result": "success"}}
    assert map_record(record)["source"] == "audit"
    policy = {"time": "2026-11-24T12:09:47Z", "category": "Policy", "resultType": "Success",
              "operationName": "Microsoft.Authorization/policies/audit/action", "properties": {"policies": "[]"}}
    assert map_record(policy)["source"] == "policy"


def test_a_user_token_names_the_actor_type_whatever_the_role_evidence_says() -> None:
    record = {"time": "2026-11-24T12:09:47Z", "category": "Administrative", "resultType": "Success",
              "identity": {"authorization": {"evidence": {"principalType": "ServicePrincipal"}},
                           "claims": {"upn": "bob@contoso.example"}}}
    assert map_record(record)["actor_type"] == "User"
    app_token = {**record, "identity": {"authorization": {"evidence": {"principalType": "Group"}},
                                        "claims": {"appid": "de910e00-0000-4000-8000-00000000a991", "idtyp": "app"}}}
    assert map_record(app_token)["actor_type"] == "ServicePrincipal"


@pytest.mark.parametrize(("during", "aggregated", "level"), [
    ("none", "low", "low"), ("medium", "low", "medium"), ("none", None, "none"), ("hidden", None, "hidden"),
    (None, None, None),
])
def test_the_higher_of_the_sign_in_and_aggregated_risk(during: str | None, aggregated: str | None,
                                                      level: str | None) -> None:
    record = {"time": "2026-11-24T12:09:47Z", "category": "SignInLogs",
              "properties": {"riskLevelDuringSignIn": during, "riskLevelAggregated": aggregated}}
    assert map_record(record)["risk_level"] == level


@pytest.mark.parametrize(("record", "reason"), [
    ({"category": "StorageRead", "operationName": "GetBlob", "requestDate": "2026-11-24"},
     "unsupported shape: looks like an Azure Monitor diagnostic record without `time`; "
     "its time is under 'requestDate'"),
    ({"Operation": "FileAccessed"},
     "unsupported shape: not a known Azure log shape (Event Hub export, Log Analytics, Graph, Activity Log REST, "
     "Event Grid); it has no time"),
    ({"eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-24T13:00:00Z", "data": {}},
     "unsupported shape: an Event Grid event of type 'Microsoft.Resources.ResourceWriteSuccess'; only Azure Policy "
     "state events (Microsoft.PolicyInsights.*) are mapped"),
])
def test_records_of_no_supported_shape_are_refused_with_the_shape_they_look_like(record: dict[str, object],
                                                                                 reason: str) -> None:
    with pytest.raises(MappingError) as refused:
        map_record(record)
    assert str(refused.value) == reason
