"""docs/dashboard.png and docs/teams-card.png from the bundled samples (`make screenshot`), so the
pictures in the docs stay true.

A throw-away Azurite on free ports gets the samples through normalize and detect; `python -m shared
serve` serves the dashboard over it; headless Chromium takes the picture. Nothing is left running.
The Teams card is what delivery sends for the bundled NSG rule write (samples/activity/nsg-rule-write.json)
raised by a demo rule: its context (the rule's verdict from the Start stage's request body, the
operation's description, the address class) is computed offline, as delivery_fn computes it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: make the repo importable

from shared.cli import azurite
from shared.cli.rule_tests import in_memory_detector
from shared.cli.screenshot import capture, card_page, install_chromium, sample_inventory
from shared.cli.serve import spawn
from shared.clients.eventhubs import Position, bodies_with_positions, trigger_batch
from shared.delivery.context import AlertContext
from shared.delivery.formats import teams_message
from shared.delivery.lifecycle import Lifecycle, StoredAlert
from shared.detect.alerts import subjects_of
from shared.detect.engine import detect_batch
from shared.detect.rules.loader import load_rules
from shared.enrich.service import build_enricher
from shared.normalize.batch import normalize_bodies
from shared.settings import Settings

DOCS = Path(__file__).resolve().parent
OUT = DOCS / "dashboard.png"
CARD_OUT = DOCS / "teams-card.png"
DEMO_RULE = """
id: nsg-rule-written
title: NSG rule written
description: A network security group rule was created or changed.
severity: high
kind: match
detection:
  write:
    operation: MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/SECURITYRULES/WRITE
    result: Success
  condition: write
group-by: [resource_id]
summary: "{actor} wrote NSG rule {resource_name} in {resource_group}"
tags: [attack.defense_evasion, attack.t1562.007]
"""
QUERY = "dashboard?from=2026-11-01&to=2026-11-30"  # the samples' month


def main() -> int:
    logging.getLogger("stormwatch").setLevel(logging.ERROR)  # the per-batch log lines are for App Insights
    chromium = install_chromium()
    with tempfile.TemporaryDirectory(prefix="stormwatch-screenshot-") as folder:
        instance = azurite.start(Path(folder))
        try:
            sample_inventory(Settings(storage_connection_string=instance.connection_string))
            served = spawn({**os.environ, "STORMWATCH_STORAGE_CONNECTION_STRING": instance.connection_string})
            try:
                capture(chromium, f"{served.url}/{QUERY}", OUT)
            finally:
                served.stop()
        finally:
            instance.stop()
    write_card(chromium, CARD_OUT)
    for written in (OUT, CARD_OUT):
        print(f"wrote {written.relative_to(Path.cwd()) if written.is_relative_to(Path.cwd()) else written}")
    return 0


def demo_message() -> dict[str, Any]:
    """The Teams message delivery sends for the sample NSG rule write, context computed offline."""
    with tempfile.TemporaryDirectory(prefix="stormwatch-card-") as folder:
        (Path(folder) / "rule.yaml").write_text(DEMO_RULE)
        (rule,) = load_rules(Path(folder)).rules
    sample = DOCS.parent / "samples" / "activity" / "nsg-rule-write.json"
    normalized = normalize_bodies([(sample.read_bytes(), Position("sample", 0))], include_raw=True)
    bodies = [event.body for event in normalized.events]
    (alert,) = detect_batch(bodies_with_positions(trigger_batch(bodies, "0")), in_memory_detector(rule)).alerts
    subject = subjects_of([alert], [orjson.loads(body) for body in bodies])[alert.alert_id]
    enricher = build_enricher(Settings())  # no storage, no ARM call: the request body holds the rule
    context = AlertContext(lambda: enricher)(StoredAlert(alert, Lifecycle(), False, subject))
    return teams_message(alert, context)


def write_card(chromium: str, png: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="stormwatch-card-page-") as folder:
        page = Path(folder) / "card.html"
        page.write_text(card_page(demo_message()), encoding="utf-8")
        capture(chromium, page.as_uri(), png, window="620,470")


if __name__ == "__main__":
    sys.exit(main())
