"""Every route through its registered function, against the fake ARM and a cache table in Azurite."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.caller import PRINCIPAL_HEADER
from shared.clients import wiring
from shared.clients.eventhubs import Position
from shared.enrich import api
from shared.normalize.batch import normalize_bodies
from tests.conftest import indexed_functions, sample
from tests.enrich.conftest import call, json_of, write_geo_database
from tests.enrich.fake_arm import CALLER_DETAILS, SUBSCRIPTION, FakeArm, arm_path, failing, forbidden, throttled
from tests.test_caller import ERIN, READER_ONLY

pytestmark = pytest.mark.usefixtures("enrich_env")
NSG, RULE, VAULT = arm_path("nsg-web"), arm_path("rule-allow-9753"), arm_path("kv-prod-secrets")
ALERT, ASSIGNMENT = arm_path("alert-powershell"), arm_path("role-assignment-bob-owner")
TAGS = arm_path("service-tags")
NORMALIZED_RULE_WRITE: dict[str, Any] = api.EXAMPLE_EVENT | {"source_ip": "13.68.20.7"}  # in AzureMonitor


def error_of(response: Any) -> dict[str, Any]:
    detail: dict[str, Any] = json_of(response)["error"]
    assert detail["status"] == response.status_code
    return detail


def test_bindings_are_http_triggers_with_function_keys() -> None:
    functions = indexed_functions()
    for route in api.ROUTES:
        trigger = functions[route.function].get_trigger()
        assert trigger.get_dict_repr()["type"] == "httpTrigger"
        assert trigger.route == route.path and trigger.route.startswith("enrich/")
        assert [str(getattr(method, "value", method)) for method in trigger.methods] == [route.method]
        assert str(getattr(trigger.auth_level, "value", trigger.auth_level)).lower() == "function"
    assert {name for name in functions if name.startswith("enrich_")} == {route.function for route in api.ROUTES}


def test_ip_in_an_azure_service_tag_from_arm_cached_in_the_table(fake_arm: FakeArm) -> None:
    first = call("enrich_ip", route={"ip": "13.68.20.7"})
    assert first.status_code == 200
    answer = json_of(first)
    assert answer["is_azure"] is True and answer["address_class"] == "public"
    assert [tag["name"] for tag in answer["service_tags"]] == ["AzureMonitor", "AzureCloud.eastus", "AzureCloud"]
    assert answer["service_tags_version"] == "arm eastus, change 63"
    assert json_of(call("enrich_ip", route={"ip": "2603:1030:210::9"}))["is_azure"] is True
    assert len(fake_arm.calls(TAGS)) == 1  # the worker keeps the index in memory
    wiring.reset()  # a new worker: the tags come from the cache table, not from ARM
    assert json_of(call("enrich_ip", route={"ip": "13.68.20.7"}))["is_azure"] is True
    assert len(fake_arm.calls(TAGS)) == 1


def test_ip_when_arm_refuses_the_service_tags(fake_arm: FakeArm) -> None:
    fake_arm.script(TAGS, forbidden("Microsoft.Network/locations/serviceTags/read"))
    answer = json_of(call("enrich_ip", route={"ip": "13.68.20.7"}))
    assert answer["is_azure"] is None
    assert "Reader role" in answer["notes"][0]
    json_of(call("enrich_ip", route={"ip": "13.68.20.8"}))
    assert len(fake_arm.calls(TAGS)) == 1  # the failure is remembered for a minute


def test_ip_geolocation_from_the_configured_database(enrich_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    enrich_env.setenv("STORMWATCH_GEOIP_DATABASE", str(write_geo_database(tmp_path / "city.mmdb")))
    wiring.reset()
    answer = json_of(call("enrich_ip", route={"ip": "198.51.100.143"}))
    assert answer["geolocation"]["country_code"] == "BR"
    assert answer["notes"] == []


def test_ip_with_the_offline_tags_file(enrich_env: pytest.MonkeyPatch, fake_arm: FakeArm, tmp_path: Path) -> None:
    tags = tmp_path / "ServiceTags_Public.json"
    tags.write_bytes(orjson.dumps({"changeNumber": "9", "values": [
        {"name": "AzureCloud", "properties": {"addressPrefixes": ["20.33.0.0/16"]}}]}))
    enrich_env.setenv("STORMWATCH_SERVICE_TAGS_FILE", str(tags))
    wiring.reset()
    answer = json_of(call("enrich_ip", route={"ip": "20.33.4.5"}))
    assert answer["service_tags_version"] == "file ServiceTags_Public.json, change 9"
    assert fake_arm.requests == []


@pytest.mark.parametrize("bad", ["10.0.0.0/8", "..%2F..%2Fetc", "fe80::1%eth0", "1.2.3.4;", "x" * 100, ""])
def test_ip_refuses_anything_but_an_address(bad: str, fake_arm: FakeArm) -> None:
    response = call("enrich_ip", route={"ip": bad})
    assert response.status_code == 400
    assert "not an IP address" in error_of(response)["message"]
    assert fake_arm.requests == []


def test_operation_from_the_catalog_with_its_classification() -> None:
    answer = json_of(call("enrich_operation",
                          route={"name": "Microsoft.Sql/servers/databases/transparentDataEncryption/write"}))
    assert answer["operation"] == "MICROSOFT.SQL/SERVERS/DATABASES/TRANSPARENTDATAENCRYPTION/WRITE"
    assert answer["provider"] == "MICROSOFT.SQL" and answer["action"] == "create_or_update"
    assert answer["common_event"] == "Encryption Modified"
    assert answer["description"]
    sign_in = {"name": "Sign-in activity"}
    assert json_of(call("enrich_operation", route=sign_in, params={"source": "signin", "result": "Failure"})
                   )["common_event"] == "Authentication Failure"
    assert json_of(call("enrich_operation", route=sign_in, params={"source": "signin"})
                   )["common_event"] == "Authentication Success"


def test_an_operation_no_catalog_knows_is_described_from_its_id() -> None:
    answer = json_of(call("enrich_operation", route={"name": "Microsoft.Nothing/widgets/write"}))
    assert answer["operation"] == "MICROSOFT.NOTHING/WIDGETS/WRITE" and answer["display_name"] is None
    assert answer["description"] == "Create or update widget (Microsoft.Nothing/widgets)"
    assert answer["action"] == "create_or_update"


@pytest.mark.parametrize(("route", "params"), [
    ({"name": "Microsoft.Network/../../etc/passwd%00"}, {}), ({"name": "<script>"}, {}), ({"name": ""}, {}),
    ({"name": "Microsoft.Network/networkSecurityGroups/write"}, {"source": "evil"}),
    ({"name": "Microsoft.Network/networkSecurityGroups/write"}, {"result": "Success; drop"}),
])
def test_operation_parameters_are_validated(route: dict[str, str], params: dict[str, str]) -> None:
    assert call("enrich_operation", route=route, params=params).status_code == 400


def test_nsg_rule_with_its_verdict_and_the_cache(fake_arm: FakeArm) -> None:
    first = call("enrich_resource", params={"id": RULE})
    assert first.status_code == 200
    rule = json_of(first)
    assert rule["verdict"] == "allows inbound TCP 9753 from any source"
    assert rule["rules"][0] | {"verdict": None} == {
        "name": "allow-9753", "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
        "source_address_prefixes": ["*"], "source_port_ranges": ["*"], "destination_address_prefixes": ["*"],
        "destination_port_ranges": ["9753"], "description": "temp vendor access", "verdict": None,
        "risk": "medium"}
    second = json_of(call("enrich_resource", params={"id": RULE.upper()}))
    assert second == rule  # same answer, same fetch time: from the cache
    assert len(fake_arm.calls(RULE)) == 1


@pytest.mark.parametrize(("name", "kind", "verdict_start"), [
    ("nsg-web", "network_security_group", "2 of 4 custom rule(s) allow inbound traffic from any source"),
    ("kv-prod-secrets", "key_vault", "reachable from any network"),
    ("stprodexports", "storage_account", "anonymous (public) blob access allowed"),
    ("role-assignment-bob-owner", "role_assignment", "grants Owner to User b0b00000"),
])
def test_allow_listed_resources(name: str, kind: str, verdict_start: str) -> None:
    answer = json_of(call("enrich_resource", params={"id": arm_path(name)}))
    assert answer["kind"] == kind
    assert answer["verdict"].startswith(verdict_start)


def test_role_name_lookups_are_cached_too(fake_arm: FakeArm) -> None:
    call("enrich_resource", params={"id": ASSIGNMENT})
    wiring.reset()
    call("enrich_resource", params={"id": ASSIGNMENT})
    assert len(fake_arm.calls(arm_path("role-definition-owner"))) == 1
    assert len(fake_arm.calls(ASSIGNMENT)) == 1


@pytest.mark.parametrize("hostile", [
    f"{NSG}/../../../providers/Microsoft.Compute/virtualMachines/vm-web-01", f"{NSG}%2F..%2F..", f"{NSG}/..",
    f"{NSG}?api-version=1", f"{NSG}#x", f"{RULE}/extra", f"http://169.254.169.254{NSG}", f"{VAULT}/secrets/db",
])
def test_hostile_resource_ids_never_reach_arm(hostile: str, fake_arm: FakeArm) -> None:
    response = call("enrich_resource", params={"id": hostile})
    assert response.status_code == 400
    assert fake_arm.requests == []


def test_other_types_get_400_with_the_allow_list(fake_arm: FakeArm) -> None:
    vm = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-prod-web/providers/Microsoft.Compute/virtualMachines/vm"
    response = call("enrich_resource", params={"id": vm})
    assert response.status_code == 400
    detail = error_of(response)
    assert "Microsoft.Compute/virtualMachines is not in the allow-list" in detail["message"]
    assert detail["allowed_types"] == ["Microsoft.Network/networkSecurityGroups/securityRules",
                                       "Microsoft.Network/networkSecurityGroups", "Microsoft.KeyVault/vaults",
                                       "Microsoft.Storage/storageAccounts", "Microsoft.Authorization/roleAssignments"]
    assert call("enrich_resource").status_code == 400
    assert fake_arm.requests == []


def test_arm_404_stays_404() -> None:
    response = call("enrich_resource", params={"id": NSG + "-deleted"})
    assert response.status_code == 404
    assert "not found" in error_of(response)["message"]


def test_arm_403_explains_the_missing_reader_role_without_arm_s_details(fake_arm: FakeArm) -> None:
    fake_arm.script(NSG, forbidden("Microsoft.Network/networkSecurityGroups/read"))
    response = call("enrich_resource", params={"id": NSG})
    assert response.status_code == 403
    message = error_of(response)["message"]
    assert "Reader role" in message and CALLER_DETAILS not in message


def test_arm_throttling_is_waited_out(fake_arm: FakeArm) -> None:
    fake_arm.script(NSG, throttled(1))
    assert call("enrich_resource", params={"id": NSG}).status_code == 200
    assert len(fake_arm.calls(NSG)) == 2


def test_long_throttling_becomes_503_with_retry_after(fake_arm: FakeArm) -> None:
    fake_arm.script(NSG, throttled(90))
    response = call("enrich_resource", params={"id": NSG})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "90"


def test_a_transient_5xx_is_retried(fake_arm: FakeArm) -> None:
    fake_arm.script(VAULT, failing(503))
    assert call("enrich_resource", params={"id": VAULT}).status_code == 200
    assert len(fake_arm.calls(VAULT)) == 2


def test_defender_alert_details_cached(fake_arm: FakeArm) -> None:
    answer = json_of(call("enrich_alert", params={"id": ALERT}))
    assert json_of(call("enrich_alert", params={"id": ALERT})) == answer
    assert len(fake_arm.calls(ALERT)) == 1
    assert answer["display_name"] == "Suspicious PowerShell Activity Detected"
    assert (answer["severity"], answer["status"], answer["compromised_entity"]) == ("Medium", "Active", "vm-web-01")
    assert answer["resource_ids"] == [f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-prod-web/providers/"
                                      "Microsoft.Compute/virtualMachines/vm-web-01"]
    assert answer["techniques"] == ["T1059"] and len(answer["entities"]) == 3


def test_alert_arm_failures(fake_arm: FakeArm) -> None:
    assert call("enrich_alert", params={"id": ALERT.replace("eastus", "westus")}).status_code == 404
    fake_arm.script(ALERT, failing(502))
    assert call("enrich_alert", params={"id": ALERT}).status_code == 200
    fake_arm.script(ALERT + "x", forbidden("Microsoft.Security/locations/alerts/read"))
    denied = call("enrich_alert", params={"id": ALERT + "x"})
    assert denied.status_code == 403 and "Reader role" in error_of(denied)["message"]


def test_alert_ids_are_validated(fake_arm: FakeArm) -> None:
    assert call("enrich_alert", params={"id": NSG}).status_code == 400
    assert call("enrich_alert", params={"id": ALERT + "/../../x"}).status_code == 400
    assert fake_arm.requests == []


def dismiss(alert_id: str, headers: dict[str, str] | None = None) -> Any:
    return call("enrich_alert_dismiss", "POST", body=orjson.dumps({"id": alert_id}), headers=headers)


def test_dismissal_is_403_until_an_operator_enables_it(fake_arm: FakeArm) -> None:
    response = dismiss(ALERT)
    assert response.status_code == 403
    assert "STORMWATCH_ALLOW_ALERT_DISMISS" in error_of(response)["message"]
    assert fake_arm.calls(method="POST") == []


def test_dismissal_when_enabled_posts_to_arm_and_refreshes_the_cached_alert(
        enrich_env: pytest.MonkeyPatch, fake_arm: FakeArm) -> None:
    enrich_env.setenv("STORMWATCH_ALLOW_ALERT_DISMISS", "true")
    wiring.reset()
    assert json_of(call("enrich_alert", params={"id": ALERT}))["status"] == "Active"
    response = dismiss(ALERT)
    assert response.status_code == 200
    assert json_of(response) == {"id": ALERT, "status": "Dismissed", "dismissed_by": "function key"}
    posted = fake_arm.calls(ALERT + "/dismiss", "POST")
    assert [call.query for call in posted] == [{"api-version": "2022-01-01"}]
    assert json_of(call("enrich_alert", params={"id": ALERT}))["status"] == "Dismissed"


def test_with_entra_sign_in_only_a_responder_dismisses_and_is_recorded(
        enrich_env: pytest.MonkeyPatch, fake_arm: FakeArm, caplog: pytest.LogCaptureFixture) -> None:
    enrich_env.setenv("STORMWATCH_ALLOW_ALERT_DISMISS", "true")
    enrich_env.setenv("STORMWATCH_HTTP_AUTH", "entra")
    wiring.reset()
    json_headers = {"content-type": "application/json"}
    assert dismiss(ALERT, json_headers).status_code == 401
    assert dismiss(ALERT, {**json_headers, PRINCIPAL_HEADER: READER_ONLY}).status_code == 403
    assert fake_arm.calls(method="POST") == []
    with caplog.at_level(logging.INFO, logger="stormwatch.enrich"):
        response = dismiss(ALERT, {**json_headers, PRINCIPAL_HEADER: ERIN})
    assert json_of(response) == {"id": ALERT, "status": "Dismissed", "dismissed_by": "erin@contoso.example"}
    assert any('"by":"erin@contoso.example"' in record.getMessage() for record in caplog.records)
    reader = call("enrich_ip", route={"ip": "198.51.100.143"}, headers={PRINCIPAL_HEADER: READER_ONLY})
    assert reader.status_code == 200


def test_dismissal_without_the_security_admin_role(enrich_env: pytest.MonkeyPatch, fake_arm: FakeArm) -> None:
    enrich_env.setenv("STORMWATCH_ALLOW_ALERT_DISMISS", "true")
    wiring.reset()
    fake_arm.script(ALERT + "/dismiss", forbidden("Microsoft.Security/locations/alerts/dismiss/action"))
    response = dismiss(ALERT)
    assert response.status_code == 403
    assert "Security Admin role" in error_of(response)["message"]


@pytest.mark.parametrize(("body", "headers", "status", "words"), [
    (b"{not json", None, 400, "malformed JSON"),
    (b"", None, 400, "malformed JSON"),
    (b'{"id": 5}', None, 400, "invalid AlertReference: id"),
    (b'{"id": "x", "extra": 1}', None, 400, "extra"),
    (b"[]", None, 400, "invalid AlertReference"),
    (b'{"id": "x"}', {"content-type": "text/plain"}, 415, "application/json"),
    (b'{"id": "' + b"a" * (64 * 1024) + b'"}', None, 413, "larger than 65536 bytes"),
])
def test_dismiss_bodies_are_checked_before_anything_else(body: bytes, headers: dict[str, str] | None, status: int,
                                                         words: str, fake_arm: FakeArm) -> None:
    response = call("enrich_alert_dismiss", "POST", body=body, headers=headers)
    assert response.status_code == status
    assert words in error_of(response)["message"]
    assert fake_arm.requests == []


def test_event_gets_ip_operation_and_resource_context() -> None:
    response = call("enrich_event", "POST", body=orjson.dumps(NORMALIZED_RULE_WRITE))
    assert response.status_code == 200
    event = json_of(response)
    assert event["event_id"] == NORMALIZED_RULE_WRITE["event_id"] and event["actor"] == "dave@contoso.example"
    context = event["enrichment"]
    assert context["ip"]["is_azure"] is True
    assert context["operation"]["display_name"] == "Create or update NSG security rule"
    assert context["resource"]["verdict"] == "allows inbound TCP 9753 from any source"
    assert context["problems"] == []


def test_event_parts_that_cannot_be_found_are_listed_as_problems(fake_arm: FakeArm) -> None:
    fake_arm.script(RULE, forbidden("Microsoft.Network/networkSecurityGroups/securityRules/read"))
    event = NORMALIZED_RULE_WRITE | {"source_ip": None, "operation": "MICROSOFT.NOTHING/WRITE"}
    context = json_of(call("enrich_event", "POST", body=orjson.dumps(event)))["enrichment"]
    assert context["ip"] is None and context["resource"] is None
    assert context["operation"]["description"] == "Create or update (Microsoft.Nothing)"  # no 404: described
    assert [(problem["part"], problem["status"]) for problem in context["problems"]] == [("resource", 403)]


def test_events_from_the_normalizer_are_accepted_as_they_are() -> None:
    result = normalize_bodies([(sample("activity/nsg-rule-write.json"), Position())], include_raw=True)
    response = call("enrich_event", "POST", body=result.events[0].body)
    assert response.status_code == 200
    assert json_of(response)["enrichment"]["operation"]["operation"].endswith("SECURITYRULES/WRITE")


def test_invalid_events_are_400_with_the_reasons() -> None:
    response = call("enrich_event", "POST", body=orjson.dumps({"event_id": "x", "source": "nowhere"}))
    assert response.status_code == 400
    message = error_of(response)["message"]
    assert "source" in message and "time" in message


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"value": value}
    return value


def test_deeply_nested_events_are_a_400_not_a_500() -> None:
    # orjson reads up to 1024 levels but writes only 255: the answer, which embeds the event, could not be written.
    body = orjson.dumps(NORMALIZED_RULE_WRITE | {"details": {"a": "deep"}}).replace(b'"deep"', b"[" * 300 + b"]" * 300)
    deep = call("enrich_event", "POST", body=body)
    assert deep.status_code == 400 and "nested deeper than 128" in error_of(deep)["message"]
    at_the_limit = call("enrich_event", "POST",
                        body=orjson.dumps(NORMALIZED_RULE_WRITE | {"details": nested(api.MAX_BODY_DEPTH - 1)}))
    assert at_the_limit.status_code == 200, error_of(at_the_limit)


def test_openapi_document_lists_every_route_under_api() -> None:
    document = json_of(call("enrich_openapi"))
    assert document["openapi"].startswith("3.")
    assert document["servers"] == [{"url": "/api"}]
    assert set(document["paths"]) == {"/enrich/ip/{ip}", "/enrich/operation/{name}", "/enrich/resource",
                                      "/enrich/alert", "/enrich/alert/dismiss", "/enrich/event",
                                      "/enrich/openapi.json"}
    resource = document["paths"]["/enrich/resource"]["get"]
    assert resource["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ResourceContext"}
    assert set(resource["responses"]) >= {"400", "403", "404", "503"}
    assert "NormalizedEvent" in document["components"]["schemas"]


@pytest.mark.parametrize(("setting", "value"), [
    ("STORMWATCH_ARM_ENDPOINT", "http://user:hunter2@management.example"),
    ("STORMWATCH_SERVICE_TAGS_REGION", "west europe/../hunter2"),
    ("STORMWATCH_SUBSCRIPTION_ID", "hunter2"),
    ("STORMWATCH_ARM_API_VERSIONS", '{"Microsoft.Network": "hunter2"}'),
    ("STORMWATCH_GEOIP_DATABASE", "/nonexistent/hunter2.mmdb"),
])
def test_unusable_settings_are_a_500_that_names_no_value(enrich_env: pytest.MonkeyPatch, setting: str, value: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    enrich_env.setenv(setting, value)
    wiring.reset()
    with caplog.at_level(logging.ERROR):
        response = call("enrich_ip", route={"ip": "10.0.0.1"})
    assert response.status_code == 500
    assert b"hunter2" not in response.get_body() and "hunter2" not in caplog.text
    assert "settings" in error_of(response)["message"]
    assert setting in caplog.text  # the log names the setting to fix
