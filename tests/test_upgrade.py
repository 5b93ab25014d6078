"""State written by the previous release keeps working after an upgrade (README "Upgrade").

`tests/compat/state-0.1.0.json` holds the detection-state entities that release 0.1.0 wrote after the
first half of the sample delete spike (generated once by that release's own code; never regenerate it
from the current code, or the test proves nothing). The current code loads them and takes the second half:
the spike must fire once, counting deletes from both releases, and the first half replayed (a redelivery
across the upgrade) must change nothing.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import Position
from shared.clients.publisher import InProcessPublisher
from shared.detect.alerts import MemoryAlertStore
from shared.detect.engine import Detector, detect_batch, load_pack
from shared.detect.state import MemoryEntityStore, StateTable
from shared.normalize.batch import normalize_bodies
from tests.conftest import REPO, SAMPLES

PREVIOUS = REPO / "tests" / "compat" / "state-0.1.0.json"


def _value(value: Any) -> Any:
    if isinstance(value, dict) and "$bytes" in value:
        return base64.b64decode(value["$bytes"])
    if isinstance(value, dict) and "$datetime" in value:
        return datetime.fromisoformat(value["$datetime"])
    return value


def test_detection_state_of_the_previous_release_carries_on() -> None:
    saved = orjson.loads(PREVIOUS.read_bytes())
    store = MemoryEntityStore(lambda: datetime(2026, 11, 27, 3, 0, tzinfo=UTC))
    for entity in saved["state"]:
        store.insert({name: _value(value) for name, value in entity.items()})
    rules = [rule for rule in load_pack(None).rules if rule.id == saved["rule"]]
    detector = Detector(rules=rules, state=StateTable(store), alerts=MemoryAlertStore(),
                        publisher=InProcessPublisher(), alerts_hub="alerts", dead_letters=InMemoryDeadLetterStore())
    body = Path(SAMPLES / "attack" / "delete-spike.json").read_bytes()
    events = [output.body for output in normalize_bodies([(body, Position("p", 0))]).events]
    applied = saved["events_applied"]
    replayed = detect_batch([(event, Position("0", index)) for index, event in enumerate(events[:applied])], detector)
    assert replayed.alerts == [] and replayed.state_writes == 0 and replayed.redelivered > 0
    report = detect_batch([(event, Position("0", index)) for index, event in enumerate(events)][applied:], detector)
    (alert,) = report.alerts
    earlier = {orjson.loads(event)["event_id"] for event in events[:applied]}
    assert alert.count == 10  # the rule's threshold, reached by deletes of both releases
    assert earlier & set(alert.event_ids), "the alert counts deletes the previous release saw"
