"""Context attached before delivery: the NSG rule from the Start stage's request body (no ARM call), the
role of a role assignment and a Defender alert from the fake ARM on 127.0.0.1, and a slow ARM cut off at
the bound with the part listed as missing."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from shared.cli.screenshot import DEMO_NSG_RULE, demo_message
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import Position, bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.delivery.context import AlertContext
from shared.delivery.engine import run_delivery
from shared.delivery.lifecycle import Lifecycle, StoredAlert
from shared.detect.engine import build_detector, detect_batch
from shared.detect.rules.loader import load_rules
from shared.enrich.service import enricher
from shared.normalize.batch import normalize_bodies
from tests.conftest import sample
from tests.delivery.conftest import DeliveryTables, make_alert
from tests.delivery.receiver import receiving
from tests.enrich.fake_arm import Answer, FakeArm, arm_body, arm_path


def detect_sample(tables: DeliveryTables, tmp_path: Path, relative: str, rule: str) -> None:
    """The sample through normalize and detect as the functions run them, alerts saved in the test's table."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rule.yaml").write_text(textwrap.dedent(rule))
    pack = load_rules(rules)
    assert not pack.errors
    normalized = normalize_bodies([(sample(relative), Position("sample", 0))], include_raw=True)
    events = [event.body for event in normalized.events]
    detector = build_detector(pack.rules, tables.service(), state_table=f"state{tables.alerts[6:]}",
                              alerts_table=tables.alerts, publisher=InProcessPublisher(), alerts_hub="alerts",
                              dead_letters=InMemoryDeadLetterStore())
    report = detect_batch(bodies_with_positions(trigger_batch(events, "0")), detector)
    assert len(report.alerts) == 1


def test_an_nsg_rule_write_arrives_with_the_rule_from_its_start_stage(delivery_tables: DeliveryTables,
                                                                      arm: FakeArm, tmp_path: Path) -> None:
    detect_sample(delivery_tables, tmp_path, "activity/nsg-rule-write.json", DEMO_NSG_RULE)
    delivery_tables.routes("""
        routes:
          - name: soar
            destination: {type: webhook, url_setting: HOOK}
        """)
    with receiving() as receiver:
        deliverer = delivery_tables.deliverer({"HOOK": receiver.url}, enrich=AlertContext(enricher))
        assert run_delivery(deliverer).delivered == 1
    context = receiver.received[0].json()["context"]
    resource = context["resource"]
    assert resource["from"] == "request body" and resource["kind"] == "security_rule"
    assert resource["verdict"] == "allows inbound TCP 9753 from any source" and resource["risk"] == "medium"
    assert context["operation"]["description"].startswith("Creates or changes a rule")
    assert context["ip"]["address_class"] == "documentation"
    assert ("Risk (medium)", resource["verdict"]) in [tuple(fact) for fact in context["facts"]]
    assert arm.calls(arm_path("rule-allow-9753")) == []  # the request body sufficed: ARM not asked
    assert context["missing"] == []


def stored(subject: dict[str, str], **fields: Any) -> StoredAlert:
    return StoredAlert(make_alert(1, **fields), Lifecycle(), False, subject)


def test_a_role_assignment_gets_its_role_name_and_scope_from_arm(arm: FakeArm) -> None:
    assignment = arm_path("role-assignment-bob-owner")
    context = AlertContext(enricher)(stored({"resource_id": assignment, "operation":
                                             "MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE"}))
    role = context["resource"]["role_assignment"]
    assert context["resource"]["from"] == "ARM" and role["role_name"] == "Owner"
    assert ("Role", f"Owner at {role['scope']}") in context["facts"]


def test_a_defender_alert_arrives_with_its_details(arm: FakeArm) -> None:
    defender = arm_path("alert-powershell")
    context = AlertContext(enricher)(stored({}, rule_id="defender-alert", group={"alert_id": "x",
                                                                                 "details.arm_id": defender}))
    assert context["defender"]["display_name"] == arm_body("alert-powershell")["properties"]["alertDisplayName"]
    assert any(name == "Defender" for name, _ in context["facts"])


def test_a_slow_arm_is_cut_off_and_the_alert_says_what_is_missing(arm: FakeArm) -> None:
    assignment = arm_path("role-assignment-bob-owner")
    arm.script(assignment, Answer(200, arm_body("role-assignment-bob-owner"), delay=2.0))
    context = AlertContext(enricher, seconds=0.3)(stored({"resource_id": assignment, "source_ip": "198.51.100.7"}))
    assert context["missing"] == ["resource: no answer within 0.3 s"]
    assert context["ip"]["ip"] == "198.51.100.7"  # what was known went out


def test_an_arm_refusal_is_listed_not_raised(arm: FakeArm) -> None:
    assignment = arm_path("role-assignment-bob-owner")
    arm.script(assignment, Answer(404, {"error": {"code": "NotFound", "message": "gone"}}))
    context = AlertContext(enricher)(stored({"resource_id": assignment}))
    assert "resource" not in context and context["missing"][0].startswith("resource: ")


def test_an_alert_without_a_subject_goes_out_saying_so() -> None:
    context = AlertContext(enricher)(StoredAlert(make_alert(1), Lifecycle(), False, None))
    assert context == {"missing": ["subject: the alert was raised before its events reached this batch"]}


def test_the_readme_card_shows_the_sample_rule_with_its_verdict_computed_offline() -> None:
    card = demo_message()["attachments"][0]["content"]
    facts = {fact["title"]: fact["value"] for element in card["body"] if element["type"] == "FactSet"
             for fact in element["facts"]}
    assert facts["Risk (medium)"] == "allows inbound TCP 9753 from any source"
    assert facts["Operation"].startswith("Creates or changes a rule")
    assert not any("not available" in element.get("text", "") for element in card["body"])
