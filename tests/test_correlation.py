"""Sigma correlation rules (event_count, value_count, temporal, temporal_ordered) on the Table state:
loading, conditions, sequences, redelivery (whole and after a crash between levels), suppression."""

from __future__ import annotations

import textwrap
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from pydantic import ValidationError

from shared.cli.rule_tests import in_memory_detector, run_cases, with_inputs
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.publisher import InProcessPublisher
from shared.detect.alerts import TableAlertStore
from shared.detect.engine import Detector
from shared.detect.rules import RulePack, load_rules
from shared.detect.rules.model import Condition
from shared.detect.rules.rule import Rule
from tests.detect_fixtures import T0, Tables, event, run, tables
from tests.test_detect import crashing_state

__all__ = ["tables"]  # the fixture, used by name



def signin_rule(name: str, number: int, result: str) -> str:
    """A plain rule selecting sign-ins of one result (a document of a multi-document file)."""
    return (f"title: {name}\nname: {name}\nid: 0b9d5a4e-0000-4000-8000-00000000000{number}\nlevel: low\n"
            f"detection:\n  selected: {{action: sign_in, result: {result}}}\n  condition: selected\n---\n")


BRUTE_FORCE = signin_rule("signin-failed", 1, "Failure") + signin_rule("signin-succeeded", 2, "Success") + """
title: Many failed sign-ins
name: signin-failures
id: 0b9d5a4e-0000-4000-8000-000000000003
level: medium
correlation:
  type: event_count
  rules: [signin-failed]
  group-by: [actor]
  timespan: 10m
  condition: {gte: 5}
---
title: Brute force then success
id: brute-force-success
level: high
correlation:
  type: temporal_ordered
  rules: [signin-failures, signin-succeeded]
  group-by: [actor]
  timespan: 10m
summary: "{actor} signed in after {count} steps"
"""


def pack_from(tmp_path: Path, text: str, **more: str) -> RulePack:
    folder = tmp_path / uuid.uuid4().hex[:8]
    folder.mkdir()
    (folder / "rules.yml").write_text(textwrap.dedent(text))
    for name, other in more.items():
        (folder / name).write_text(textwrap.dedent(other))
    return load_rules(folder)


def loaded(tmp_path: Path, text: str, **more: str) -> dict[str, Rule]:
    pack = pack_from(tmp_path, text, **more)
    assert not pack.errors, [str(error) for error in pack.errors]
    return {rule.id: rule for rule in pack.rules}


def error_of(tmp_path: Path, text: str) -> str:
    pack = pack_from(tmp_path, text)
    assert len(pack.errors) == 1, [str(error) for error in pack.errors]
    return str(pack.errors[0])


def signin(number: int, seconds: float, result: str, actor: str = "dave@contoso.example",
           **fields: Any) -> dict[str, Any]:
    return event(number, T0 + timedelta(seconds=seconds), action="sign_in", result=result, actor=actor,
                 source="signin", **fields)


def failures(count: int, start: float = 0, first: int = 0, actor: str = "dave@contoso.example") -> list[dict[str, Any]]:
    return [signin(first + index, start + 10 * index, "Failure", actor) for index in range(count)]


def test_a_file_holds_rules_and_their_correlations_and_counted_rules_are_silent(tmp_path: Path) -> None:
    rules = loaded(tmp_path, BRUTE_FORCE)
    assert {rule.id: (rule.kind, rule.level, rule.silent) for rule in rules.values()} == {
        "signin-failed": ("match", 0, True),  # a rule with a name is known by it
        "signin-succeeded": ("match", 0, True),
        "signin-failures": ("event_count", 0, True),
        "brute-force-success": ("temporal_ordered", 1, False)}


def test_brute_force_then_success_raises_one_alert_with_the_whole_sequence(tables: Tables, tmp_path: Path) -> None:
    rules = list(loaded(tmp_path, BRUTE_FORCE).values())
    report = run(tables.detector(rules), [*failures(6), signin(50, 90, "Success")])
    assert [alert.rule_id for alert in report.alerts] == ["brute-force-success"]  # the inputs stay quiet
    alert = report.alerts[0]
    assert alert.group == {"actor": "dave@contoso.example"} and alert.count == 2
    assert alert.event_ids == [f"evt-{n}" for n in range(5)] + ["evt-50"]
    assert alert.summary == "dave@contoso.example signed in after 2 steps"


@pytest.mark.parametrize(("name", "events"), [
    ("success before the failures", [signin(50, 0, "Success"), *failures(6, start=10)]),
    ("too few failures", [*failures(4), signin(50, 60, "Success")]),
    ("success too long after", [*failures(5), signin(50, 40 + 11 * 60, "Success")]),
    ("another user succeeds", [*failures(5), signin(50, 60, "Success", actor="erin@contoso.example")]),
])
def test_no_sequence_no_alert(tables: Tables, tmp_path: Path, name: str, events: list[dict[str, Any]]) -> None:
    rules = list(loaded(tmp_path, BRUTE_FORCE).values())
    assert run(tables.detector(rules), events).alerts == [], name


def test_a_sequence_split_over_batches_and_instances_still_fires_once(tables: Tables, tmp_path: Path) -> None:
    rules = list(loaded(tmp_path, BRUTE_FORCE).values())
    events = [*failures(5), signin(50, 60, "Success"), signin(51, 70, "Success")]
    alerts = [alert for index, item in enumerate(events)
              for alert in run(tables.detector(rules), [item], first_sequence=index).alerts]
    assert [alert.rule_id for alert in alerts] == ["brute-force-success"]  # the second success is suppressed


def test_a_redelivered_sequence_repeats_its_alert_id_and_counts_nothing_twice(tables: Tables, tmp_path: Path) -> None:
    rules = list(loaded(tmp_path, BRUTE_FORCE).values())
    events = [*failures(6), signin(50, 90, "Success")]
    first = run(tables.detector(rules), events, first_sequence=100)
    again = run(tables.detector(rules), events, first_sequence=100)
    assert len(first.alerts) == 1 and again.alerts == [] and again.alerts_repeated == 1
    assert again.state_writes == 0 and len(tables.alert_ids()) == 1


def test_a_crash_between_the_count_and_the_sequence_is_exact_after_redelivery(tables: Tables, tmp_path: Path) -> None:
    """The event_count key is written, the process dies before the temporal_ordered key: on redelivery the
    count's alert comes back replayed and completes the sequence, with the id it would have had."""
    rules = list(loaded(tmp_path, BRUTE_FORCE).values())
    events = [*failures(6), signin(50, 90, "Success")]
    crashing = Detector(rules=rules, state=crashing_state(tables, 1),
                        alerts=TableAlertStore(tables.service().get_table_client(tables.alerts)),
                        publisher=InProcessPublisher(), alerts_hub="alerts", dead_letters=InMemoryDeadLetterStore())
    with pytest.raises(ServiceRequestError):
        run(crashing, events)
    assert [row["rule"] for row in tables.state_rows()] == ["signin-failures"]
    retried = run(tables.detector(rules), events)
    fresh_tables = Tables(tables.connection_string, f"s{uuid.uuid4().hex[:12]}", f"a{uuid.uuid4().hex[:12]}")
    clean = run(fresh_tables.detector(rules), events)
    assert [alert.alert_id for alert in retried.alerts] == [alert.alert_id for alert in clean.alerts]
    assert len(clean.alerts) == 1


TEMPORAL = """
title: Role assignment written
name: role-assigned
id: role-assigned
level: low
detection:
  write: {operation: MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE}
  condition: write
---
title: Lock deleted
name: lock-deleted
id: lock-deleted
level: low
detection:
  lock: {operation: MICROSOFT.AUTHORIZATION/LOCKS/DELETE}
  condition: lock
---
title: Lock deleted and a role assigned by the same caller
id: lock-and-role
level: high
correlation:
  type: temporal
  rules: [role-assigned, lock-deleted]
  group-by: [actor]
  timespan: 5m
  generate: true
"""


def activity(number: int, seconds: float, operation: str, actor: str = "mallory@contoso.example") -> dict[str, Any]:
    return event(number, T0 + timedelta(seconds=seconds), operation=operation, action="other", actor=actor)


ROLE, LOCK = "MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE", "MICROSOFT.AUTHORIZATION/LOCKS/DELETE"


@pytest.mark.parametrize("order", [(ROLE, LOCK), (LOCK, ROLE)])
def test_temporal_fires_in_either_order_and_generate_keeps_the_inputs_alerting(
        tables: Tables, tmp_path: Path, order: tuple[str, str]) -> None:
    rules = list(loaded(tmp_path, TEMPORAL).values())
    report = run(tables.detector(rules), [activity(1, 0, order[0]), activity(2, 120, order[1])])
    assert sorted(alert.rule_id for alert in report.alerts) == ["lock-and-role", "lock-deleted", "role-assigned"]


def test_temporal_needs_every_rule_within_the_timespan(tables: Tables, tmp_path: Path) -> None:
    rules = list(loaded(tmp_path, TEMPORAL).values())
    apart = run(tables.detector(rules), [activity(1, 0, ROLE), activity(2, 301, LOCK)])
    alone = run(tables.detector(rules), [activity(3, 0, ROLE), activity(4, 60, ROLE)])
    assert "lock-and-role" not in {alert.rule_id for alert in [*apart.alerts, *alone.alerts]}


def test_temporal_counts_events_that_arrive_out_of_order_in_event_time(tables: Tables, tmp_path: Path) -> None:
    rules = list(loaded(tmp_path, TEMPORAL).values())
    run(tables.detector(rules), [activity(2, 400, LOCK)], first_sequence=0)
    late = run(tables.detector(rules), [activity(1, 300, ROLE)], first_sequence=1)
    assert "lock-and-role" in {alert.rule_id for alert in late.alerts}


VALUE_COUNT = """
title: Secret read
name: secret-read
id: secret-read
level: low
detection:
  read: {operation: MICROSOFT.KEYVAULT/VAULTS/SECRETS/GETSECRET/ACTION}
  condition: read
---
title: Many secrets read by one caller
id: secrets-in-bulk
level: high
correlation:
  type: value_count
  rules: [secret-read]
  group-by: [caller]
  timespan: 10m
  condition: {field: resource_name, gte: 3, lte: 4}
  aliases:
    caller: {secret-read: actor}
"""


def secret(number: int, name: str) -> dict[str, Any]:
    return event(number, T0 + timedelta(seconds=number), operation="MICROSOFT.KEYVAULT/VAULTS/SECRETS/GETSECRET/ACTION",
                 action="read", resource_name=name)


def test_value_count_counts_distinct_values_through_an_alias_and_a_range(tables: Tables, tmp_path: Path) -> None:
    rules = list(loaded(tmp_path, VALUE_COUNT).values())
    few = run(tables.detector(rules), [secret(1, "a"), secret(2, "b"), secret(3, "b")])
    assert few.alerts == []
    enough = run(tables.detector(rules), [secret(4, "c")], first_sequence=10)
    assert [(alert.rule_id, alert.count, alert.group) for alert in enough.alerts] == [
        ("secrets-in-bulk", 3, {"caller": "mallory@contoso.example"})]


@pytest.mark.parametrize(("condition", "true", "false"), [
    ({"gte": 5}, [5, 9], [4]), ({"gt": 5}, [6], [5]), ({"eq": 3}, [3], [2, 4]),
    ({"lte": 2}, [0, 2], [3]), ({"lt": 2}, [1], [2]), ({"gte": 3, "lt": 6}, [3, 5], [2, 6]),
])
def test_conditions_as_sigma_writes_them(condition: dict[str, int], true: list[int], false: list[int]) -> None:
    parsed = Condition.model_validate(condition)
    assert all(parsed.holds(value) for value in true) and not any(parsed.holds(value) for value in false)
    assert all(parsed.holds(value) == parsed.holds(parsed.saturation) for value in range(parsed.saturation, 50))


@pytest.mark.parametrize("condition", [{}, {"gt": 5, "lt": 3}, {"field": "x"}])
def test_a_condition_no_count_can_meet_is_refused(condition: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Condition.model_validate(condition)


BASE = """
title: Base
name: base
id: base
level: low
detection:
  any: {action: delete}
  condition: any
---
"""


@pytest.mark.parametrize(("correlation", "message"), [
    ("{type: event_count, rules: [nope], timespan: 1m, condition: {gte: 2}}", "rule 'nope' is not loaded"),
    ("{type: value_count, rules: [base], timespan: 1m, condition: {gte: 2}}", "counts the values of condition.field"),
    ("{type: temporal_ordered, rules: [base, base], timespan: 1m, condition: {gte: 2}}", "takes no condition"),
    ("{type: temporal, rules: [base], timespan: 1m}", "relates two rules or more"),
    ("{type: event_count, rules: [base], timespan: 15s, condition: {gte: 2}}", "multiple of 10s"),
    ("{type: event_count, rules: [base], timespan: 1m}", "needs a condition"),
])
def test_a_correlation_that_cannot_run_is_reported_with_its_line(tmp_path: Path, correlation: str,
                                                                 message: str) -> None:
    text = BASE + f"title: Broken\nid: broken\nlevel: high\ncorrelation: {correlation}\n"
    error = error_of(tmp_path, text)
    assert message in error and "rules.yml:" in error


def test_a_correlation_may_name_a_rule_of_another_file(tmp_path: Path) -> None:
    rules = loaded(tmp_path, BASE.removesuffix("---\n"), **{"count.yaml": """
        title: Many
        id: many
        level: high
        correlation: {type: event_count, rules: [base], group-by: [actor], timespan: 1m, condition: {gte: 2}}
        """})
    assert rules["many"].members[0].name == "base" and rules["base"].silent


def test_embedded_tests_of_a_sequence_run_with_its_counted_correlations(tmp_path: Path) -> None:
    text = BRUTE_FORCE + textwrap.dedent("""
        tests:
          - name: five failures then a success
            alerts: 1
            events:
              - repeat: 5
                every: 10s
                event: {source: signin, action: sign_in, result: Failure, actor: dave}
              - {time: "2026-01-01T00:01:30Z", source: signin, action: sign_in, result: Success, actor: dave}
          - name: a success alone
            alerts: 0
            events:
              - {source: signin, action: sign_in, result: Success, actor: dave}
        """)
    rule = loaded(tmp_path, text)["brute-force-success"]
    assert len(with_inputs(rule)) == 2  # the counted correlation runs beside it
    results = run_cases(rule, in_memory_detector)
    assert [result.describe() for result in results if not result.passed] == [] and len(results) == 2


def test_a_correlation_may_name_a_correlation_of_a_later_file_and_a_cycle_is_an_error(tmp_path: Path) -> None:
    counted = """
        title: Many
        name: many
        id: 5e1f0000-0000-4000-8000-0000000000c1
        level: low
        correlation: {type: event_count, rules: [base], group-by: [actor], timespan: 1m, condition: {gte: 2}}
        """
    sequence = """
        title: Many then base
        name: a-sequence
        id: 5e1f0000-0000-4000-8000-0000000000c2
        level: high
        correlation: {type: temporal_ordered, rules: [many, base], group-by: [actor], timespan: 5m}
        """
    rules = loaded(tmp_path, BASE.removesuffix("---\n"), **{"a.yaml": sequence, "z.yaml": counted})
    assert (rules["a-sequence"].level, rules["many"].silent) == (1, True)
    loop = sequence.replace("rules: [many, base]", "rules: [b-loop, base]").replace(
        "temporal_ordered", "temporal")
    pack = pack_from(tmp_path, BASE.removesuffix("---\n"), **{
        "a.yaml": loop, "b.yaml": loop.replace("a-sequence", "b-loop").replace("b-loop, base", "a-sequence, base")
        .replace("c2", "c3")})
    assert sorted(error.message.split(":")[1].strip() for error in pack.errors) == [
        "rule 'a-sequence' is not loaded (a correlation names rules by name or id; a rule that failed to load or "
        "whose status is not run cannot be counted)",
        "rule 'b-loop' is not loaded (a correlation names rules by name or id; a rule that failed to load or "
        "whose status is not run cannot be counted)"]
