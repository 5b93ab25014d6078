"""Third-party Azure log samples (../shared/conformance, absent on a user's clone): every record gets an
event or a reasoned dead letter, and events carry the who/what/when/where their record carries."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.clients.eventhubs import Position
from shared.normalize.batch import normalize_bodies
from shared.values import as_dict, lower_keys
from tests.conftest import CONFORMANCE, CONFORMANCE_FILES, conformance_bodies

pytestmark = pytest.mark.skipif(not CONFORMANCE.is_dir(), reason="../shared/conformance is not present")

def records_of(body: bytes) -> list[Any]:
    document = orjson.loads(body)
    if isinstance(document, dict) and "records" in document:
        records: list[Any] = document["records"]
        return records
    return document if isinstance(document, list) else [document]


@pytest.mark.parametrize("path", CONFORMANCE_FILES, ids=lambda path: path.name)
def test_every_record_is_an_event_or_a_reasoned_dead_letter(path: Path) -> None:
    bodies = conformance_bodies(path)
    expected = sum(len(records_of(body)) for body in bodies)
    result = normalize_bodies([(body, Position("c", index)) for index, body in enumerate(bodies)])
    assert result.records_in == expected
    assert len(result.events) + len(result.dead_letters) == expected
    assert all(letter.reason for letter in result.dead_letters)


# Results as vendors spell them, which normalize writes in its one vocabulary (or null for `None`).
VENDOR_SPELLINGS = frozenset({"Succeeded", "Succeeded.", "Failed", "None", "Started", "Accepted"})


def has_valid_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("path", CONFORMANCE_FILES, ids=lambda path: path.name)
def test_events_carry_the_fields_their_record_has(path: Path) -> None:
    for body in conformance_bodies(path):
        result = normalize_bodies([(body, Position("c", 0))], include_raw=True)
        for output in result.events:
            event = orjson.loads(output.body)
            record = lower_keys(event["raw"])
            assert event["time"] and event["event_id"] and event["source"]
            if record.get("operationname"):
                assert event["operation"], "what: operation"
            if has_valid_ip(record.get("calleripaddress")):
                assert event["source_ip"], "where from: source_ip"
            resource = record.get("resourceid")
            if isinstance(resource, str) and resource.lower().startswith("/subscriptions/"):
                assert event["subscription_id"] == resource.split("/")[2].lower(), "where: subscription"
                assert event["resource_type"], "where: resource type"
            properties = as_dict(record.get("properties"))
            if event["source"] == "signin" and properties.get("userPrincipalName"):
                assert event["actor"] == properties["userPrincipalName"], "who: signed-in user"
            assert event["result"] not in VENDOR_SPELLINGS, "result: one vocabulary"
            if properties.get("riskEventType"):
                assert event["risk_event_types"] == [properties["riskEventType"]], "what: risk detection"
            claims = as_dict(as_dict(record.get("identity")).get("claims"))
            if any("upn" in key.lower() for key in claims):
                assert event["actor"], "who: caller"
