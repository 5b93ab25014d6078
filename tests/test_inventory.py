"""Inventory aggregates: exact under redelivery and concurrency (Azurite), bounded Top-N, the catalog."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

from shared.cli import azurite
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.publisher import InProcessPublisher
from shared.detect.engine import Detector, build_detector, detect_batch
from shared.detect.inventory_aggregates import (
    OTHER,
    TENANT,
    TOP_N,
    InventoryState,
    Item,
    advance_inventory,
    bounded,
    summarize,
)
from shared.detect.inventory_table import InventoryTable, inventory_table
from shared.detect.rules import load_rules
from shared.detect.subscriptions import environment_lists, load_catalog
from tests.detect_fixtures import BURST_RULE, DEVELOPMENT, PRODUCTION, T0, Tables, batch, deletes, event, rule_from

DAY = T0.date()


def test_bounded_keeps_the_top_n_and_sums_the_rest_into_other() -> None:
    counts = {f"type-{index:03}": index + 1 for index in range(500)} | {OTHER: 7}
    kept = bounded(counts, TOP_N)
    assert len(kept) == TOP_N + 1 and sum(kept.values()) == sum(counts.values())
    assert list(kept)[:2] == ["type-499", "type-498"] and kept[OTHER] == 7 + sum(range(1, 481))


def test_a_noisy_caller_cannot_grow_an_aggregate_beyond_the_bound() -> None:
    items = [Item(index, event(index, T0, actor=f"caller-{index}@contoso.example")) for index in range(5_000)]
    state = advance_inventory(None, "0", items).state
    assert isinstance(state, InventoryState) and len(state.to_json()) < 20_000
    assert len(state.counters["actor"]) == TOP_N + 1 and sum(state.counters["actor"].values()) == 5_000
    assert advance_inventory(state, "0", items).state is None  # every position at or below the watermark


def test_the_catalog_names_subscriptions_and_derives_environment_lists() -> None:
    catalog = load_catalog(Path(__file__).resolve().parent.parent / "rules")
    assert catalog.name_of(PRODUCTION) == "Contoso Production" and catalog.name_of("other") == "other"
    assert environment_lists(catalog) == {"production_subscriptions": {PRODUCTION},
                                          "development_subscriptions": {DEVELOPMENT},
                                          "staging_subscriptions": frozenset()}


def test_a_rule_filters_on_environment(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "subscriptions.yaml").write_text(
        f"subscriptions:\n  {DEVELOPMENT}: {{name: Dev, environment: development}}\n")
    (tmp_path / "burst.yaml").write_text(
        BURST_RULE.replace("logsource: {product: azure}\n", "logsource: {product: azure}\n"
                           "filters: [{field: subscription_id, in: development_subscriptions}]\n", 1))
    pack = load_rules(tmp_path)
    assert not pack.errors, [str(error) for error in pack.errors]
    rule = pack.rules[0]
    assert rule.selects(event(1, T0, subscription_id=DEVELOPMENT))
    assert not rule.selects(event(2, T0, subscription_id=PRODUCTION))


def _detector(tables: Tables, inventory: str, rule_dir: Path) -> Detector:
    """One function instance: its own clients and caches."""
    return build_detector([rule_from(rule_dir, BURST_RULE)], tables.service(), state_table=tables.state,
                          alerts_table=tables.alerts, publisher=InProcessPublisher(), alerts_hub="alerts",
                          dead_letters=InMemoryDeadLetterStore(), inventory=inventory)


def test_aggregates_are_exact_under_redelivery_and_concurrency(tmp_path: Path,
                                                               azurite_instance: azurite.Azurite) -> None:
    suffix = uuid.uuid4().hex[:12]
    tables = Tables(azurite_instance.connection_string, f"state{suffix}", f"alerts{suffix}")
    name = f"inventory{suffix}"
    signins = [event(200 + index, T0, source="signin", action="sign_in", result="Failure", subscription_id=None,
                     actor="alice@contoso.example") for index in range(4)]
    errors = [event(300 + index, T0, action="create_or_update", result="Failure", severity="Error",
                    resource_type="Microsoft.Compute/virtualMachines") for index in range(2)]
    events = deletes(12) + deletes(5, first=100, start=T0 + timedelta(days=1), subscription_id=DEVELOPMENT) \
        + signins + errors
    one = _detector(tables, name, tmp_path)
    assert len(detect_batch(batch(events), one).alerts) == 1
    detect_batch(batch(events), one)  # redelivered whole, to the instance that wrote it (cached ETags)
    detect_batch(batch(events[10:], first_sequence=10), _detector(tables, name, tmp_path))  # from its middle
    later = T0 + timedelta(hours=5)
    with ThreadPoolExecutor(2) as pool:  # two instances, two partitions, the same aggregates
        list(pool.map(lambda partition: detect_batch(batch(deletes(3, start=later, first=int(partition) * 1000),
                                                           partition), _detector(tables, name, tmp_path)),
                      ["1", "2"]))
    table = inventory_table(tables.service(), name)
    stored = {tuple(key): state for key, state in table.read(None, DAY, DAY + timedelta(days=1))}
    production = stored[PRODUCTION, DAY.isoformat()]
    assert production.totals == {"alerts": 1, "deletes": 18, "errors": 2, "events": 20, "signin_failures": 0}
    assert production.counters["result"] == {"Success": 18, "Failure": 2}
    assert [alert["rule_id"] for alert in production.latest_alerts] == ["burst"]
    assert stored[DEVELOPMENT, (DAY + timedelta(days=1)).isoformat()].totals["deletes"] == 5
    assert stored[TENANT, DAY.isoformat()].totals == {"alerts": 0, "deletes": 0, "errors": 0, "events": 4,
                                                        "signin_failures": 4}
    summary = summarize(table.read(PRODUCTION, DAY, DAY), top=5)
    assert summary.totals["events"] == 20 and summary.subscriptions == {PRODUCTION: 20}
    assert _days(table, date(2026, 11, 1)) == []


def _days(table: InventoryTable, day: date) -> list[str]:
    return [key.row_key for key, _ in table.read(None, day, day)]
