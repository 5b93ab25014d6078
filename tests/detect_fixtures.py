"""Helpers and fixtures of the detect tests: rules written on the fly, normalized events, host-shaped
batches, and a pair of fresh tables per test in the session's Azurite (no mocked Table client)."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.data.tables import TableServiceClient

from shared.cli import azurite
from shared.clients import wiring
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import Position, bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.detect import day_tables
from shared.detect.alerts import Alert
from shared.detect.engine import Detector, DetectReport, build_detector, detect_batch
from shared.detect.rules import Rule, load_rules
from shared.detect.rules.aggregate import KeyState
from shared.detect.rules.rule import state_key
from shared.normalized_event import FIELD_NAMES

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
# The day tables' clock in these tests (`shared.detect.day_tables`): which partitions read and fence
# yesterday's table depends on the hour, and a test must not pass or fail by the hour it runs at. At 01:28
# partition 0 turned 88 minutes ago and the others more than three hours ago.
PINNED_HOUR = time(1, 28)
PRODUCTION = "a1b2c3d4-1111-4111-8111-000000000001"
DEVELOPMENT = "d4c3b2a1-2222-4222-8222-000000000002"

BURST_RULE = """
title: Deletes
name: burst-deletes
id: 5e1f0000-0000-4000-8000-000000000001
level: informational
logsource: {product: azure}
detection:
  deleted: {action: delete}
  condition: deleted
---
title: Burst of deletes
name: burst
id: 5e1f0000-0000-4000-8000-000000000002
description: test rule
level: high
correlation:
  type: event_count
  rules: [burst-deletes]
  group-by: [actor]
  timespan: 10m
  condition: {gte: 10}
lateness: 30m
suppress: 1h
summary: "{actor} deleted {count}"
"""


def rule_from(tmp_path: Path, text: str, name: str = "rule.yaml") -> Rule:
    """Load the one alerting rule of YAML text (written to its own folder; a correlation comes with the rules
    it counts), failing the test on a load error."""
    folder = tmp_path / uuid.uuid4().hex[:8]
    folder.mkdir()
    (folder / name).write_text(textwrap.dedent(text))
    pack = load_rules(folder)
    assert not pack.errors, [str(error) for error in pack.errors]
    [rule] = [rule for rule in pack.rules if not rule.silent]
    return rule


def event(number: int, moment: datetime, **fields: Any) -> dict[str, Any]:
    """A normalized event (every contract field present) with a stable id from `number`."""
    values: dict[str, Any] = dict.fromkeys(FIELD_NAMES)
    values.update(event_id=f"evt-{number}", source="activity", common_event="Other", action="delete",
                  result="Success", actor="mallory@contoso.example", subscription_id=PRODUCTION)
    values.update(fields)
    values["time"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return values


def deletes(count: int, start: datetime = T0, every: timedelta = timedelta(seconds=10), first: int = 0,
            **fields: Any) -> list[dict[str, Any]]:
    return [event(first + index, start + index * every, **fields) for index in range(count)]


def batch(events: Sequence[dict[str, Any]], partition: str = "0",
          first_sequence: int = 0) -> list[tuple[bytes, Position]]:
    """What the host hands detect_fn: EventHubEvents built by its converter, read back as positions."""
    return bodies_with_positions(trigger_batch([orjson.dumps(item) for item in events], partition, first_sequence))


@dataclass
class TransactionCounter:
    """Counts Table Storage requests (each one is a billed transaction) through the SDK's response hook."""

    count: int = 0
    methods: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def __call__(self, response: Any) -> None:
        self.count += 1
        self.methods.append(response.http_request.method)
        self.urls.append(response.http_request.url)

    def reset(self) -> None:
        self.count = 0
        self.methods.clear()
        self.urls.clear()


@dataclass
class Tables:
    """A pair of tables of its own for one test, in the session's Azurite."""

    connection_string: str
    state: str
    alerts: str

    def service(self, counter: TransactionCounter | None = None) -> TableServiceClient:
        hooks: dict[str, Any] = {} if counter is None else {"raw_response_hook": counter}
        return TableServiceClient.from_connection_string(self.connection_string, **hooks)

    def detector(self, rules: list[Rule], counter: TransactionCounter | None = None,
                 publisher: InProcessPublisher | None = None, *, inventory: bool = False) -> Detector:
        """A detector as one function instance has it: its own clients and entity cache (and, as in
        production, the inventory table when `inventory`)."""
        return build_detector(rules, self.service(counter), state_table=self.state, alerts_table=self.alerts,
                              publisher=publisher or InProcessPublisher(), alerts_hub="alerts",
                              dead_letters=InMemoryDeadLetterStore(),
                              inventory=f"{self.state}inventory" if inventory else None)

    def state_of(self, rule: Rule, *group: str | None) -> KeyState | None:
        """The stored state of one key, read straight from the table."""
        state = day_tables.state_table(self.service(), self.state)
        return state.stored_state(state.key_of(rule, state_key(tuple(group))), state.daily_horizon(rule))

    def state_table_names(self) -> list[str]:
        """The state table and its day tables, those that exist."""
        found = self.service().query_tables("TableName ge @low and TableName le @high",
                                            parameters={"low": self.state, "high": f"{self.state}99999999"})
        return [table.name for table in found]

    def state_rows(self) -> list[dict[str, Any]]:
        """Every state row of the state table and its day tables, tombstones left out."""
        service = self.service()
        return [dict(row) for name in self.state_table_names()
                for row in service.get_table_client(name).list_entities() if day_tables.MOVED not in row]

    def count_of(self, rule: Rule, *group: str | None) -> int:
        state = self.state_of(rule, *group)
        return 0 if state is None else sum(bucket.count for bucket in state.buckets.values())

    def alert_ids(self) -> set[str]:
        client = self.service().get_table_client(self.alerts)
        return {row["PartitionKey"] for row in client.list_entities(select=["PartitionKey"])}


@pytest.fixture
def tables(app_env: pytest.MonkeyPatch, azurite_instance: azurite.Azurite) -> Iterator[Tables]:
    """Fresh table names, also set as app settings so the registered functions use them."""
    suffix = uuid.uuid4().hex[:12]
    pair = Tables(azurite_instance.connection_string, f"state{suffix}", f"alerts{suffix}")
    app_env.setenv("STORMWATCH_STATE_TABLE", pair.state)
    app_env.setenv("STORMWATCH_ALERTS_TABLE", pair.alerts)
    pinned = datetime.combine(datetime.now(UTC).date(), PINNED_HOUR, UTC)
    app_env.setattr(day_tables, "utc_now", lambda: pinned)
    wiring.reset()
    yield pair


def run(detector: Detector, events: Sequence[dict[str, Any]], partition: str = "0",
        first_sequence: int = 0) -> DetectReport:
    return detect_batch(batch(events, partition, first_sequence), detector)


def alerts_of(reports: Sequence[DetectReport]) -> list[Alert]:
    return [alert for report in reports for alert in report.alerts]
