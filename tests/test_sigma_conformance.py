"""SigmaHQ's Azure rules, unmodified (../shared/conformance/sigma, absent on a user's clone), through the real
detect path: each rule's positive Event Hub body is normalized, detected against Table storage in Azurite,
and must raise that rule's alert when the manifest says real data can; its negative body never does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.clients.eventhubs import Position
from shared.detect.engine import detect_batch
from shared.detect.rules import Rule, load_rules
from shared.normalize.batch import normalize_bodies
from tests.conftest import CONFORMANCE
from tests.detect_fixtures import Tables, tables

SIGMA = CONFORMANCE / "sigma"
MANIFEST: dict[str, dict[str, Any]] = (orjson.loads((SIGMA / "manifest.json").read_bytes())
                                       if (SIGMA / "manifest.json").is_file() else {})
__all__ = ["tables"]  # the fixture, used by name
ALL_STATUSES = ("stable", "test", "experimental", "deprecated", "unsupported")

pytestmark = pytest.mark.skipif(not MANIFEST, reason="../shared/conformance/sigma is not present")


@pytest.fixture(scope="module")
def sigma_rules() -> dict[Path, Rule]:
    pack = load_rules(SIGMA / "rules", ALL_STATUSES)
    assert not pack.errors, [str(error) for error in pack.errors]
    return {rule.path.resolve(): rule for rule in pack.rules}


def alerted_rules(tables: Tables, rules: list[Rule], body: bytes) -> set[str]:
    """Normalize one Event Hub body as normalize_fn does, then detect its events as detect_fn does."""
    normalized = normalize_bodies([(body, Position("0", 0))], include_raw=True)
    events = [(output.body, Position("0", index)) for index, output in enumerate(normalized.events)]
    report = detect_batch(events, tables.detector(rules))
    assert report.rule_errors == 0
    return {alert.rule_id for alert in report.alerts}


def test_every_rule_of_the_folder_loads(sigma_rules: dict[Path, Rule]) -> None:
    assert {(SIGMA / entry["rule"]).resolve() for entry in MANIFEST.values()} <= set(sigma_rules)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_positive_fires_and_negative_stays_silent(name: str, sigma_rules: dict[Path, Rule], tables: Tables) -> None:
    entry = MANIFEST[name]
    rule = sigma_rules[(SIGMA / entry["rule"]).resolve()]
    everything = list(sigma_rules.values())
    fired = alerted_rules(tables, everything, (SIGMA / entry["positive"]).read_bytes())
    if entry["expect_positive_alerts"]:
        assert rule.id in fired, f"{name} did not fire on its positive record"
    assert rule.id not in alerted_rules(tables, everything, (SIGMA / entry["negative"]).read_bytes())


def test_sigma_metadata_travels_into_the_alert(sigma_rules: dict[Path, Rule], tables: Tables) -> None:
    entry = MANIFEST["azure_mfa_disabled"]
    rule = sigma_rules[(SIGMA / entry["rule"]).resolve()]
    normalized = normalize_bodies([((SIGMA / entry["positive"]).read_bytes(), Position("0", 0))])
    report = detect_batch([(output.body, Position("0", 0)) for output in normalized.events],
                          tables.detector([rule]))
    [alert] = report.alerts
    assert alert.severity == rule.spec.level == "medium"
    assert alert.tags == rule.spec.tags and any(tag.startswith("attack.t") for tag in alert.tags)
    assert alert.references == rule.spec.references and alert.references
    assert alert.falsepositives == rule.spec.falsepositives and alert.author == "@ionsor"
