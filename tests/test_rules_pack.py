"""The default rule pack under rules/: it loads, every rule's embedded cases pass against Azurite, the
ordinary samples stay quiet, the attack samples raise what they are for, and `rules test` reports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from sigma.collection import SigmaCollection
from sigma.rule import SigmaRule
from sigma.validation import SigmaValidator
from sigma.validators.core import validators

from shared.cli.local_storage import local_settings
from shared.cli.replay import detect_published, partition_for, replay_bodies
from shared.cli.rule_tests import run_cases, with_inputs
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.detect.engine import RULES_DIR, Detector, detect_batch
from shared.detect.rules import Rule, load_rules
from shared.detect.rules.loader import rule_files
from shared.detect.subscriptions import environment_lists, load_catalog
from shared.normalize.batch import process_batch
from shared.normalized_event import FIELD_NAMES
from shared.settings import Settings
from tests.conftest import REPO, SAMPLES
from tests.detect_fixtures import Tables, tables

__all__ = ["tables"]  # the fixture, used by name

PACK = load_rules(RULES_DIR)
BY_ID = {rule.id: rule for rule in PACK.rules}
ALERTING = [rule for rule in PACK.rules if not rule.silent]  # the others are only counted by correlations
AGGREGATING = {rule.id for rule in PACK.rules if rule.kind in ("event_count", "value_count")}
MATCH = "match"

# What issues 3 and 16 ask the default pack to cover, by rule id (the alerting rules).
EXPECTED = {
    # the seed's watchlist and spikes
    "activity-log-profile-changed": MATCH, "diagnostic-settings-deleted": MATCH, "sql-tde-changed": MATCH,
    "security-policy-changed": MATCH, "policy-assignment-changed": MATCH, "defender-alert": MATCH,
    "policy-violation": MATCH, "delete-spike-per-caller": "event_count",
    "error-spike-per-subscription": "event_count", "signin-failures-per-user": "event_count",
    "password-spray": "value_count", "signin-new-country": "first_seen",
    "region-new-for-subscription": "first_seen", "role-assignment-added": MATCH,
    "group-member-removed": MATCH, "user-created": MATCH,
    # issue 16's list
    "elevate-access": MATCH, "resource-lock-deleted": MATCH, "storage-account-keys-listed": MATCH,
    "storage-sas-generated": MATCH, "keyvault-secrets-read-in-bulk": "value_count",
    "aks-admin-credentials-listed": MATCH, "diagnostic-settings-written": MATCH, "defender-plan-downgraded": MATCH,
    "nsg-management-port-open": MATCH, "role-assignment-broad-scope": MATCH, "domain-federation-changed": MATCH,
    "conditional-access-policy-changed": MATCH, "mfa-disabled": MATCH, "app-credentials-added": MATCH,
    "app-consent-granted": MATCH, "guest-invited-then-elevated": "temporal_ordered",
    "brute-force-then-success": "temporal_ordered", "mfa-fatigue": "temporal_ordered",
    "impossible-travel": MATCH, "user-created-then-privileged": "temporal_ordered",
    # more of the same families
    "keyvault-deleted": MATCH, "keyvault-access-policy-changed": MATCH, "vm-run-command": MATCH,
    "custom-role-created": MATCH, "policy-exemption-created": MATCH, "alert-rule-deleted": MATCH,
    "log-analytics-workspace-deleted": MATCH, "storage-public-access-enabled": MATCH,
    "sql-firewall-open-to-internet": MATCH, "risky-signin-succeeded": MATCH, "service-principal-owner-added": MATCH,
}
ATTACK_TAG = re.compile(r"^attack\.(t\d{4}(\.\d{3})?|[a-z]+(-[a-z]+)*)$")  # a technique or a tactic


def test_the_default_pack_loads_completely_and_covers_the_issue() -> None:
    assert PACK.errors == []
    assert {rule.id: rule.kind for rule in ALERTING} == EXPECTED
    assert len(EXPECTED) >= 40
    assert all(rule.path.name == f"{rule.id}.yaml" for rule in ALERTING)


@pytest.mark.parametrize("rule", ALERTING, ids=lambda rule: rule.id)
def test_every_rule_carries_a_positive_and_a_negative_case_and_attack_tags(rule: Rule) -> None:
    assert any(case.alerts > 0 for case in rule.cases) and any(case.alerts == 0 for case in rule.cases)
    assert rule.spec.tags and all(ATTACK_TAG.match(tag) for tag in rule.spec.tags), rule.spec.tags


def test_every_shipped_rule_is_valid_sigma_for_pysigma() -> None:
    """The reference library reads the whole pack (rules and correlations, references resolved) and its
    validators find nothing, so standard tools convert the pack for other SIEMs. Left out: validators that
    download MITRE data (no network in tests; the tag format is checked above) and `escaped_wildcard`
    (nsg-management-port-open matches a literal `*` on purpose)."""
    collection = SigmaCollection.from_yaml("\n---\n".join(path.read_text() for path in rule_files(RULES_DIR)),
                                           collect_errors=True)
    assert [(rule.title, rule.errors) for rule in collection.rules if rule.errors] == []
    assert len(collection.rules) == len(PACK.rules)
    offline = [validator for name, validator in validators.items() if not name.endswith("tag") or
               name in ("tag_format", "duplicate_tag", "namespace_tag", "detection_tag")]
    kept = [validator for validator in offline if validator is not validators["escaped_wildcard"]]
    detections = [rule for rule in collection.rules if isinstance(rule, SigmaRule)]  # what validators read
    assert [str(issue) for issue in SigmaValidator(kept).validate_rules(iter(detections))] == []


@pytest.mark.parametrize("rule", ALERTING, ids=lambda rule: rule.id)
def test_every_rules_embedded_cases_pass_against_table_storage(rule: Rule, tables: Tables) -> None:
    def fresh_detector(for_rule: Rule) -> Detector:
        suffix = uuid.uuid4().hex[:12]  # empty state for every case
        return Tables(tables.connection_string, f"case{suffix}", f"casealerts{suffix}").detector(with_inputs(for_rule))

    results = run_cases(rule, fresh_detector)
    assert results and [result.describe() for result in results if not result.passed] == []


def test_the_production_list_names_the_production_subscription() -> None:
    lists = environment_lists(load_catalog(RULES_DIR))
    assert lists["production_subscriptions"] == {"a1b2c3d4-1111-4111-8111-000000000001"}
    assert lists["development_subscriptions"] == {"d4c3b2a1-2222-4222-8222-000000000002"}


UNLISTED = "0badc0de-9999-4999-8999-000000000009"  # a real subscription the shipped catalog does not name


@pytest.mark.parametrize(("unknown", "alerts"), [("production", 1), ("none", 0), ("development", 0)])
def test_a_subscription_the_catalog_does_not_list_counts_as_the_chosen_environment(
        tables: Tables, unknown: str, alerts: int) -> None:
    """A fresh deployment's real subscriptions are not in the shipped catalog: by default they count as
    production, so the production-scoped delete spike fires on them."""
    rules = [rule for rule in load_rules(RULES_DIR, unknown_subscriptions=unknown).rules
             if rule.id == "delete-spike-per-caller"]
    events = [{**dict.fromkeys(FIELD_NAMES), "event_id": f"e{n}", "source": "activity", "common_event": "Other",
               "time": f"2026-11-27T02:10:{n:02d}Z", "action": "delete", "result": "Success", "actor": "mallory",
               "subscription_id": UNLISTED.upper()} for n in range(12)]
    report = detect_batch(bodies_with_positions(trigger_batch([orjson.dumps(item) for item in events], "0")),
                          tables.detector(rules))
    assert len(report.alerts) == alerts


def replay_samples(tables: Tables, files: list[Path]) -> dict[str, int]:
    settings = local_settings(Settings(storage_connection_string=tables.connection_string,
                                       state_table=tables.state, alerts_table=tables.alerts))
    detector = tables.detector(PACK.rules)
    raised: dict[str, int] = {}
    for path in files:
        for alert in replay_bodies([path.read_bytes()], partition_for(str(path)), detector, settings).alerts:
            raised[alert.rule_id] = raised.get(alert.rule_id, 0) + 1
    return raised


def test_an_ordinary_day_raises_none_of_the_threshold_or_distinct_rules(tables: Tables) -> None:
    ordinary = [path for path in sorted(SAMPLES.rglob("*.json")) if path.parent.name != "attack"]
    raised = replay_samples(tables, ordinary)
    assert not AGGREGATING & set(raised), raised
    assert raised["defender-alert"] == 8 and raised["policy-violation"] == 3  # the match rules do fire


def test_the_attack_samples_raise_the_aggregation_rules(tables: Tables) -> None:
    raised = replay_samples(tables, sorted((SAMPLES / "attack").glob("*.json")))
    assert raised == {"password-spray": 1, "signin-failures-per-user": 1, "delete-spike-per-caller": 1,
                      # the spray's last attempt succeeds; the wipe takes a key vault and a workspace with it
                      "brute-force-then-success": 1, "risky-signin-succeeded": 1, "keyvault-deleted": 1,
                      "log-analytics-workspace-deleted": 1}


def test_the_demo_routes_published_events_by_partition_key(tables: Tables) -> None:
    """All samples through normalize into one hub, then detect per partition key, as `make demo` does."""
    publisher, settings = InProcessPublisher(), Settings()
    for index, path in enumerate(sorted(SAMPLES.rglob("*.json"))):
        batch = bodies_with_positions(trigger_batch([path.read_bytes()], str(index)))
        process_batch(batch, publisher, InMemoryDeadLetterStore(), settings)
    alerts = detect_published(publisher.hubs["normalized"], tables.detector(PACK.rules))
    rules = [alert.rule_id for alert in alerts]
    assert len(alerts) == 35 and rules.count("defender-alert") == 8
    assert {"signin-new-country", "delete-spike-per-caller", "password-spray"} <= set(rules)
    assert [alert.time for alert in alerts] == sorted(alert.time for alert in alerts)


def rules_test(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("STORMWATCH_")}
    return subprocess.run([sys.executable, "-m", "shared", "rules", "test", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_rules_test_reports_every_rule_of_the_default_pack() -> None:
    done = rules_test()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("PASS") for line in lines) == len(EXPECTED)
    assert sum(line.startswith("LOADED") for line in lines) == len(PACK.rules) - len(EXPECTED)  # counted inputs
    assert lines[-1] == f"{len(PACK.rules)} rules: {len(PACK.rules)} passed, 0 failed or untested; 0 files not loaded"


def test_rules_test_names_failing_cases_and_broken_files(tmp_path: Path) -> None:
    good = (RULES_DIR / "user-created.yaml").read_text()
    (tmp_path / "wrong.yaml").write_text(good.replace("name: user-created", "name: wrong").replace(
        "- name: a user deleted\n  alerts: 0", "- name: a user deleted\n  alerts: 1"))
    (tmp_path / "broken.yaml").write_text(good.replace("level: low", "level: sometimes"))
    done = rules_test(str(tmp_path))
    assert done.returncode == 1
    assert "FAIL     wrong" in done.stdout and "a user deleted: expected 1 alert(s), got 0" in done.stdout
    assert f"rule file not loaded: {tmp_path / 'broken.yaml'}:" in done.stderr
    assert "level: Input should be" in done.stderr
