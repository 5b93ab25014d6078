"""The crash/redelivery soak, short: bench/soak.py over a few thousand records in two partitions, with
failures in about a third of the batches, against the session's Azurite. The long run is
`.venv/bin/python bench/soak.py` (200,000 records, four partitions)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from shared.cli import azurite
from shared.detect.alerts import Alert, alert_entity
from shared.detect.rules.aggregate import Hit, KeyContext, KeyState, advance, to_us
from shared.detect.state import encode_state
from tests.conftest import REPO
from tests.detect_fixtures import BURST_RULE, T0, rule_from


def test_crashes_and_redeliveries_end_exactly_where_a_clean_run_ends(azurite_instance: azurite.Azurite) -> None:
    done = subprocess.run(
        [sys.executable, "bench/soak.py", "--events", "1500", "--partitions", "2", "--crash", "0.3",
         "--rewind", "0.1", "--connection-string", azurite_instance.connection_string],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "faulty run equals clean run" in done.stdout
    faulty = re.search(r"faulty: .* (\d+) failed batches, (\d+) lost checkpoints", done.stdout)
    assert faulty is not None and int(faulty.group(1)) > 0 and int(faulty.group(2)) > 0, done.stdout


def soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", REPO / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_soak_compares_the_events_each_alert_lists(tmp_path: Path) -> None:
    """Which events an alert lists is part of the exact comparison, in its row and in the state."""
    soak = soak_module()
    rule = rule_from(tmp_path, BURST_RULE)
    [alert] = advance(KeyContext(rule, "k", {"actor": "mallory"}, "0"), None, [
        Hit(to_us(T0 + timedelta(seconds=n)), f"evt-{n}", n, {}) for n in range(10)]).alerts
    reordered = alert.model_copy(update={"event_ids": alert.event_ids[::-1]})

    def result(row: Alert, fired: Alert) -> Any:
        state = KeyState(fired=[{"partition": "0", "sequence": 9, "alert": fired.model_dump(mode="json")}])
        entity = {"PartitionKey": "burst.0", "RowKey": "k", **encode_state(state)}
        return soak.RunResult(
            records_in=1, events_out=1, dead_letters=0, published_alerts=Counter([alert.alert_id]),
            state=soak.state_documents([entity]), alert_rows=soak.alert_rows([alert_entity(row)]),
            failures=0, rewinds=0, seconds=0.0)

    clean = result(alert, alert)
    assert soak.differences(clean, result(alert, alert)) == []
    [rows] = soak.differences(clean, result(reordered, alert))
    [states] = soak.differences(clean, result(alert, reordered))
    assert rows.startswith("1 alert rows differ") and states.startswith("1 state entities differ")
