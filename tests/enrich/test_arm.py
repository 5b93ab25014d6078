"""The ARM client against a fake ARM on 127.0.0.1: token, retries with Retry-After, status mapping."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared.clients.arm import (
    MAX_RETRY_AFTER,
    ArmClient,
    ArmError,
    ArmPath,
    RetryPolicy,
    api_versions,
    checked_endpoint,
)
from tests.enrich.fake_arm import CALLER_DETAILS, Answer, FakeArm, arm_path, failing, forbidden, throttled

NSG = ArmPath(arm_path("nsg-web"))
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.sw-sample-token-never-logged"  # noqa: S105 - a fake


class StaticCredential:
    """A credential that hands out one fixed token (the managed identity's role in Azure)."""

    def __init__(self, fail: bool = False) -> None:
        self.scopes: list[str] = []
        self.fail = fail

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        if self.fail:
            raise ClientAuthenticationError("ManagedIdentityCredential: no identity endpoint")
        return AccessToken(TOKEN, 4102444800)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(arm: FakeArm, sleeps: Sleeps | None = None, **retry: Any) -> ArmClient:
    return ArmClient(arm.url, None, api_versions({}), retry=RetryPolicy(**retry),
                     sleep=sleeps if sleeps is not None else Sleeps())


def test_get_sends_the_configured_api_version(fake_arm: FakeArm) -> None:
    arm = ArmClient(fake_arm.url, None, api_versions({"Microsoft.Network": "2024-05-01"}))
    assert arm.get(NSG, "Microsoft.Network")["name"] == "nsg-web"
    assert fake_arm.calls(NSG)[0].query == {"api-version": "2024-05-01"}


def test_the_token_goes_in_the_header_and_nowhere_else(fake_arm: FakeArm, caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens only travel over https; the fake is plain http, so the scheme check is bypassed here alone."""
    monkeypatch.setattr("shared.clients.arm.checked_endpoint", lambda endpoint: (endpoint.rstrip("/"), True))
    credential = StaticCredential()
    arm = ArmClient(fake_arm.url, credential)
    fake_arm.script(NSG, forbidden("Microsoft.Network/networkSecurityGroups/read"))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ArmError) as refused:
            arm.get(NSG, "Microsoft.Network")
        arm.get(NSG, "Microsoft.Network")
    assert [call.headers["Authorization"] for call in fake_arm.calls(NSG)] == [f"Bearer {TOKEN}"] * 2
    assert credential.scopes == [f"{fake_arm.url}/.default"] * 2
    assert TOKEN not in caplog.text and TOKEN not in refused.value.message
    assert caplog.records, "the client logs its calls (so the check above means something)"


def test_no_credential_means_no_authorization_header(fake_arm: FakeArm) -> None:
    client(fake_arm).get(NSG, "Microsoft.Network")
    assert "Authorization" not in fake_arm.calls(NSG)[0].headers


def test_a_missing_identity_is_a_503_with_a_short_message(monkeypatch: pytest.MonkeyPatch, fake_arm: FakeArm) -> None:
    monkeypatch.setattr("shared.clients.arm.checked_endpoint", lambda endpoint: (endpoint, True))
    with pytest.raises(ArmError) as failed:
        ArmClient(fake_arm.url, StaticCredential(fail=True)).get(NSG, "Microsoft.Network")
    assert failed.value.status == 503
    assert "identity" in failed.value.message and "ManagedIdentityCredential" not in failed.value.message


def test_429_waits_as_long_as_retry_after_says(fake_arm: FakeArm) -> None:
    sleeps = Sleeps()
    fake_arm.script(NSG, throttled(7), throttled(2))
    assert client(fake_arm, sleeps).get(NSG, "Microsoft.Network")["name"] == "nsg-web"
    assert sleeps == [7.0, 2.0]
    assert len(fake_arm.calls(NSG)) == 3


def test_5xx_backs_off_exponentially_then_succeeds(fake_arm: FakeArm) -> None:
    sleeps = Sleeps()
    fake_arm.script(NSG, failing(500), failing(502), failing(503))
    assert client(fake_arm, sleeps, backoff=0.5).get(NSG, "Microsoft.Network")["name"] == "nsg-web"
    assert sleeps == [0.5, 1.0, 2.0]


def test_5xx_with_retry_after_is_honoured_too(fake_arm: FakeArm) -> None:
    sleeps = Sleeps()
    fake_arm.script(NSG, Answer(503, None, {"Retry-After": "3"}))
    client(fake_arm, sleeps).get(NSG, "Microsoft.Network")
    assert sleeps == [3.0]


@pytest.mark.parametrize(("header", "slept"), [
    ("²", 0.5),  # a Unicode digit, not a number of seconds: the ordinary backoff
    ("1.5", 0.5), ("-3", 0.5), ("soon", 0.5), ("Wed, 32 Oct 2015 07:28:00 +9999", 0.5),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: go again now
    ("Wed, 21 Oct 2015 07:28:00 -0000", 0.0),
])
def test_retry_after_that_is_not_a_delay_is_ignored(fake_arm: FakeArm, header: str, slept: float) -> None:
    sleeps = Sleeps()
    fake_arm.script(NSG, Answer(503, None, {"Retry-After": header}))
    assert client(fake_arm, sleeps, backoff=0.5).get(NSG, "Microsoft.Network")["name"] == "nsg-web"
    assert sleeps == [slept]


@pytest.mark.parametrize("header", ["9" * 400, "Wed, 21 Oct 9999 07:28:00 GMT"])
def test_an_endless_retry_after_is_capped_and_handed_to_the_caller(fake_arm: FakeArm, header: str) -> None:
    fake_arm.script(NSG, Answer(429, None, {"Retry-After": header}))
    with pytest.raises(ArmError) as failed:
        client(fake_arm).get(NSG, "Microsoft.Network")
    assert (failed.value.status, failed.value.retry_after) == (503, MAX_RETRY_AFTER)


def test_5xx_until_the_last_attempt_is_a_502(fake_arm: FakeArm) -> None:
    fake_arm.script(NSG, *[failing(500)] * 4)
    with pytest.raises(ArmError) as failed:
        client(fake_arm).get(NSG, "Microsoft.Network")
    assert (failed.value.status, failed.value.arm_status) == (502, 500)
    assert len(fake_arm.calls(NSG)) == 4


def test_throttling_longer_than_we_wait_is_handed_to_the_caller(fake_arm: FakeArm) -> None:
    sleeps = Sleeps()
    fake_arm.script(NSG, throttled(120))
    with pytest.raises(ArmError) as failed:
        client(fake_arm, sleeps, max_wait=20).get(NSG, "Microsoft.Network")
    assert (failed.value.status, failed.value.retry_after) == (503, 120)
    assert sleeps == [] and len(fake_arm.calls(NSG)) == 1


def test_404_stays_404_and_403_names_the_missing_role(fake_arm: FakeArm) -> None:
    arm = client(fake_arm)
    with pytest.raises(ArmError) as missing:
        arm.get(ArmPath(NSG + "-gone"), "Microsoft.Network")
    assert (missing.value.status, missing.value.arm_code) == (404, "ResourceNotFound")
    fake_arm.script(NSG, forbidden("Microsoft.Network/networkSecurityGroups/read"))
    with pytest.raises(ArmError) as refused:
        arm.get(NSG, "Microsoft.Network")
    assert refused.value.status == 403 and "Reader role" in refused.value.message
    assert CALLER_DETAILS not in refused.value.message  # ARM's text about our identity stays in our logs
    fake_arm.script(NSG + "/dismiss", forbidden("Microsoft.Security/locations/alerts/dismiss/action"))
    with pytest.raises(ArmError) as not_admin:
        arm.post(ArmPath(NSG + "/dismiss"), "Microsoft.Security", role="Security Admin")
    assert "Security Admin role" in not_admin.value.message


@pytest.mark.parametrize(("answer", "status"), [
    (Answer(401, {"error": {"code": "InvalidAuthenticationToken"}}), 502),
    (Answer(400, {"error": {"code": "InvalidApiVersionParameter"}}), 400),
    (Answer(409, {"error": {"code": "Conflict"}}), 409),
    (Answer(418, {}), 502),
])
def test_other_statuses(fake_arm: FakeArm, answer: Answer, status: int) -> None:
    fake_arm.script(NSG, answer)
    with pytest.raises(ArmError) as failed:
        client(fake_arm).get(NSG, "Microsoft.Network")
    assert failed.value.status == status


def test_answers_that_are_not_json_objects_are_a_502(fake_arm: FakeArm) -> None:
    fake_arm.script(NSG, Answer(200, None, {"Content-Length": "0"}))
    with pytest.raises(ArmError) as empty:
        client(fake_arm).get(NSG, "Microsoft.Network")
    assert empty.value.status == 502


def test_a_slow_arm_times_out_into_a_504(fake_arm: FakeArm) -> None:
    sleeps = Sleeps()
    fake_arm.script(NSG, Answer(200, {}, delay=0.5), Answer(200, {}, delay=0.5))
    with pytest.raises(ArmError) as slow:
        client(fake_arm, sleeps, attempts=2, read_timeout=0.1).get(NSG, "Microsoft.Network")
    assert slow.value.status == 504
    assert len(sleeps) == 1


def test_an_unreachable_arm_is_a_502() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    arm = ArmClient(f"http://127.0.0.1:{port}", None, retry=RetryPolicy(attempts=2), sleep=Sleeps())
    with pytest.raises(ArmError) as unreachable:
        arm.get(NSG, "Microsoft.Network")
    assert unreachable.value.status == 502


def test_pages_follow_next_link_only_on_the_arm_endpoint(fake_arm: FakeArm) -> None:
    tags = ArmPath(arm_path("service-tags"))
    second = f"{fake_arm.url}{tags}?api-version=2023-09-01&$skipToken=2"
    fake_arm.script(tags, Answer(200, {"values": [1], "nextLink": second}))
    assert len(list(client(fake_arm).get_pages(tags, "Microsoft.Network"))) == 2
    fake_arm.script(tags, Answer(200, {"values": [], "nextLink": "https://evil.example/steal"}))
    with pytest.raises(ArmError) as elsewhere:
        list(client(fake_arm).get_pages(tags, "Microsoft.Network"))
    assert elsewhere.value.status == 502 and "nextLink" in elsewhere.value.message


@pytest.mark.parametrize("path", ["/subscriptions/x/../y", "/a?b", "/a#b", "/a%2fb", "https://evil.example/a", "a/b",
                                  "/a//b", "/a/./b"])
def test_the_client_refuses_paths_the_grammar_would_never_build(fake_arm: FakeArm, path: str) -> None:
    with pytest.raises(ValueError, match="not an ARM path"):
        client(fake_arm).get(ArmPath(path), "Microsoft.Network")
    assert fake_arm.requests == []


@pytest.mark.parametrize(("endpoint", "token_allowed"), [
    ("https://management.azure.com/", True), ("https://management.usgovcloudapi.net", True),
    ("http://127.0.0.1:8080", False), ("http://localhost:1", False), ("http://[::1]:9", False),
])
def test_endpoints(endpoint: str, token_allowed: bool) -> None:
    assert checked_endpoint(endpoint)[1] is token_allowed


@pytest.mark.parametrize("endpoint", ["http://management.azure.com", "http://10.0.0.5", "ftp://127.0.0.1",
                                      "https://user:secret@management.azure.com", "https://management.azure.com/?x=1"])
def test_endpoints_that_would_leak_a_token_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError):
        checked_endpoint(endpoint)


def test_a_credential_is_never_combined_with_plain_http(fake_arm: FakeArm) -> None:
    with pytest.raises(ValueError, match="plain http"):
        ArmClient(fake_arm.url, StaticCredential())


def test_api_version_overrides_are_checked() -> None:
    assert api_versions({"Microsoft.Security": "2023-01-01-preview"})["Microsoft.Security"] == "2023-01-01-preview"
    with pytest.raises(ValueError, match="provider"):
        api_versions({"Microsoft.Compute": "2024-01-01"})
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        api_versions({"Microsoft.Network": "latest&evil=1"})
