"""Run the test events embedded in rule files, through the same batch function detect_fn runs.

Each case gets a detector with empty state (`detector_for`), its events go in as one Event Hub batch
built by the host's converter, and the number of alerts raised must equal the case's `alerts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson

from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.detect.alerts import Alert, MemoryAlertStore
from shared.detect.engine import Detector, detect_batch
from shared.detect.rules.correlation import inputs_of
from shared.detect.rules.rule import Rule
from shared.detect.state import MemoryEntityStore, StateTable

TEST_PARTITION = "rule-test"


@dataclass(frozen=True)
class CaseResult:
    rule_id: str
    case: str
    expected: int
    alerts: list[Alert]

    @property
    def passed(self) -> bool:
        return len(self.alerts) == self.expected

    def describe(self) -> str:
        if self.passed:
            return f"{self.case}: {self.expected} alert(s) as expected"
        return f"{self.case}: expected {self.expected} alert(s), got {len(self.alerts)}"


def run_cases(rule: Rule, detector_for: Callable[[Rule], Detector]) -> list[CaseResult]:
    results = []
    for case in rule.cases:
        detector = detector_for(rule)
        batch = trigger_batch([orjson.dumps(event) for event in case.events], partition=TEST_PARTITION)
        report = detect_batch(bodies_with_positions(batch), detector)
        results.append(CaseResult(rule.id, case.name, case.alerts, report.alerts))
    return results


def with_inputs(rule: Rule) -> list[Rule]:
    """The rule under test raising its alerts, and the correlations it counts running silently beside it."""
    return [replace(rule, silent=False), *inputs_of(rule)]


def in_memory_detector(rule: Rule) -> Detector:
    """Empty in-process state: rule authors test without a storage account."""
    return Detector(rules=with_inputs(rule), state=StateTable(MemoryEntityStore(lambda: datetime.now(UTC))),
                    alerts=MemoryAlertStore(), publisher=InProcessPublisher(), alerts_hub="alerts",
                    dead_letters=InMemoryDeadLetterStore())
