"""The rule index: what a detection requires of a field, and that indexing never skips a rule that matches."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared.clients.eventhubs import Position
from shared.detect.engine import RULES_DIR
from shared.detect.rules import Rule, load_rules
from shared.detect.rules.index import RuleIndex
from shared.detect.rules.sigma import required_values
from shared.normalize.batch import normalize_bodies
from tests.conftest import CONFORMANCE, SAMPLES

SIGMA_RULES = CONFORMANCE / "sigma" / "rules"
ALL_STATUSES = ("stable", "test", "experimental", "deprecated", "unsupported")
OP = "operation"


@pytest.mark.parametrize(("detection", "required"), [
    ({"a": {OP: ["X", "y"], "result": "Success"}, "condition": "a"}, {"x", "y"}),
    ({"a": {OP: "X"}, "b": {OP: "Z"}, "f": {"actor": "m"}, "condition": "(a or b) and not f"}, {"x", "z"}),
    ({"a": {OP: "X"}, "f": {"actor": "m"}, "condition": "a or f"}, None),           # f matches any operation
    ({"a": {OP: "X"}, "condition": "not a"}, None),
    ({"a": {"actor": "m"}, "b": {OP: "X"}, "condition": "a and b"}, {"x"}),
    ({"sel_a": {OP: "X"}, "sel_b": {OP: "Y"}, "condition": "1 of sel_*"}, {"x", "y"}),
    ({"sel_a": {OP: ["X", "Y"]}, "sel_b": {OP: "Y"}, "condition": "all of sel_*"}, {"y"}),
    ({"a": [{OP: "X"}, {OP: "Y", "result": "Start"}], "condition": "a"}, {"x", "y"}),
    ({"a": [{OP: "X"}, {"result": "Start"}], "condition": "a"}, None),
    ({"a": {"operation|contains": "X"}, "condition": "a"}, None),                 # modifiers: not a plain set
    ({"a": {OP: "MICROSOFT.*/DELETE"}, "condition": "a"}, None),                 # wildcards
    ({"a": {OP: None}, "condition": "a"}, None),                                  # null: absent matches
    ({"a": ["keyword"], "condition": "a"}, None),
    ({"a": {OP: 4624}, "condition": ["a", "a"]}, {"4624"}),                       # numbers as text; lists OR
])
def test_what_a_detection_requires_of_a_field(detection: dict[str, Any], required: set[str] | None) -> None:
    assert required_values(detection, OP) == (None if required is None else frozenset(required))


def sample_events() -> list[dict[str, Any]]:
    bodies = [(path.read_bytes(), Position("0", index)) for index, path in enumerate(sorted(SAMPLES.rglob("*.json")))]
    return [orjson.loads(output.body) for output in normalize_bodies(bodies, include_raw=True).events]


def conformance_events() -> list[dict[str, Any]]:
    records = sorted((CONFORMANCE / "sigma" / "records").rglob("*.json")) if SIGMA_RULES.is_dir() else []
    bodies = [(path.read_bytes(), Position("0", index)) for index, path in enumerate(records)]
    return [orjson.loads(output.body) for output in normalize_bodies(bodies, include_raw=True).events]


def packs() -> list[Rule]:
    rules = list(load_rules(RULES_DIR).rules)
    if SIGMA_RULES.is_dir():
        rules.extend(load_rules(SIGMA_RULES, ALL_STATUSES).rules)
    return [rule for rule in rules if not (rule.silent and not rule.members)]


def test_the_index_skips_only_rules_that_cannot_match() -> None:
    """Every (event, rule) pair that matches when every rule is tried is found through the index: over the
    samples and SigmaHQ's conformance records (when present), with the pack and SigmaHQ's rules."""
    rules, events = packs(), sample_events() + conformance_events()
    index = RuleIndex.of(rules)
    tried = matched = 0
    for event in events:
        candidates = index.candidates(event)
        tried += len(candidates)
        everyone = {rule.id for rule in rules if rule.matching(event)}
        matched += len(everyone)
        assert everyone == {rule.id for rule in candidates if rule.matching(event)}, event["event_id"]
    assert matched > 50  # the samples do exercise the rules
    assert tried < len(rules) * len(events) / 3  # and the index does spare most of the work


def test_most_rules_of_the_pack_are_indexed_by_an_operation() -> None:
    rules = packs()
    indexed = [rule for rule in rules if rule.requirements is not None]
    assert len(indexed) >= 0.9 * len(rules)
    by_operation = [rule for rule in indexed if all("operation" in ",".join(item.paths).lower()
                                                    for item in rule.requirements or ())]
    assert len(by_operation) >= 0.5 * len(rules)
