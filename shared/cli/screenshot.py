"""The dashboard of the bundled samples in headless Chromium: for docs/screenshot.py and the browser test.

`sample_inventory` runs every sample through normalize and detect (the demo's path) into the tables
the settings name; `capture` loads a URL in Debian's `chromium` with a fresh profile and no network
beyond what the page asks for (and the dashboard asks for nothing), writes a PNG and returns the DOM.
`card_page` is a Teams Workflows message drawn by the Adaptive Cards renderer (npm `adaptivecards`,
installed by `make setup`), for the picture of the card delivery sends.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import orjson

from shared.cli.demo import sample_files
from shared.cli.replay import detect_published, local_detector
from shared.cli.rule_tests import in_memory_detector
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import Position, bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.clients.storage import table_service
from shared.delivery.context import AlertContext
from shared.delivery.formats import teams_message
from shared.delivery.lifecycle import Lifecycle, StoredAlert
from shared.detect.alerts import Alert, subjects_of
from shared.detect.engine import detect_batch, load_pack
from shared.detect.rules.loader import load_rules
from shared.enrich.service import build_enricher
from shared.normalize.batch import normalize_bodies, process_batch
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CARD_RENDERER = REPO / "node_modules" / "adaptivecards" / "dist" / "adaptivecards.min.js"
# Close to Teams' light theme: its font, text colours and spacing.
TEAMS_HOST = {"fontFamily": "'Segoe UI', system-ui, sans-serif", "supportsInteractivity": False,
              "containerStyles": {"default": {"backgroundColor": "#FFFFFF", "foregroundColors": {
                  "default": {"default": "#242424", "subtle": "#616161"}, "attention": {"default": "#C4314B"},
                  "warning": {"default": "#835B00"}, "accent": {"default": "#5B5FC7"}}}},
              "factSet": {"title": {"weight": "Bolder", "maxWidth": 160}, "spacing": 8}}
DEMO_NSG_RULE = """
title: NSG rule written
id: 664561f8-f579-52c8-b3b8-c77407dce345
name: nsg-rule-written
description: A network security group rule was created or changed.
tags: [attack.defense_evasion, attack.t1562.007]
detection:
  write:
    operation: MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/SECURITYRULES/WRITE
    result: Success
  condition: write
level: high
group-by: [resource_id]
summary: "{actor} wrote NSG rule {resource_name} in {resource_group}"
"""
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")
WINDOW = "1280,2600"  # tall enough for the latest alerts


def sample_inventory(settings: Settings) -> tuple[int, list[Alert]]:
    """The samples through normalize and detect into fresh tables; (events normalized, alerts raised)."""
    publisher = InProcessPublisher()
    for partition, path in enumerate(sample_files()):
        batch = trigger_batch([path.read_bytes()], partition=str(partition))
        process_batch(bodies_with_positions(batch), publisher, InMemoryDeadLetterStore(), settings)
    pack = load_pack(settings.rules_dir, settings.rule_statuses, settings.unknown_subscriptions)
    local = local_detector(pack.rules, table_service(settings), settings)
    local.start_fresh()
    events = publisher.hubs.get(settings.normalized_hub, [])
    return len(events), detect_published(events, local.detector)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def install_chromium() -> str:
    """Debian's package, when missing (root only); the reason as an error when that fails."""
    if found := find_chromium():
        return found
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}")
    if found := find_chromium():
        return found
    raise RuntimeError("apt-get installed chromium but no chromium binary is on PATH")


def capture(chromium: str, url: str, png: Path, window: str = WINDOW) -> str:
    """Screenshot `url` into `png` and return its DOM as Chromium built it (two runs, fresh profiles)."""
    def run(*arguments: str) -> str:
        with tempfile.TemporaryDirectory(prefix="stormwatch-chromium-") as profile:
            done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window}",  # noqa: S603
                                   *arguments, url], capture_output=True, text=True, timeout=90, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout

    run(f"--screenshot={png}")
    return run("--dump-dom")


def card_page(message: dict[str, Any]) -> str:
    """An HTML page drawing the message's Adaptive Card as a Teams channel post would hold it."""
    card = message["attachments"][0]["content"]
    script = CARD_RENDERER.read_text(encoding="utf-8")
    return ("<!doctype html><html><head><meta charset='utf-8'><style>body{margin:0;background:#f5f5f5;"
            "font-family:'Segoe UI',system-ui,sans-serif}.post{margin:16px;width:560px;background:#fff;"
            "border-radius:4px;box-shadow:0 1px 3px rgba(0,0,0,.2);padding:12px 16px}.who{font-size:13px;"
            "color:#616161;margin-bottom:6px}</style></head><body><div class='post'><div class='who'>"
            "Workflows · Stormwatch alerts</div><div id='card'></div></div>"
            f"<script>{script}</script><script>const card=new AdaptiveCards.AdaptiveCard();"
            f"card.hostConfig=new AdaptiveCards.HostConfig({orjson.dumps(TEAMS_HOST).decode()});"
            f"card.parse({orjson.dumps(card).decode()});"
            "document.getElementById('card').appendChild(card.render());</script></body></html>")


def demo_message() -> dict[str, Any]:
    """The Teams message delivery sends for the sample NSG rule write raised by DEMO_NSG_RULE; its context
    (the rule's verdict from the Start stage's request body, the operation's description, the address
    class) computed offline, as delivery_fn computes it."""
    with tempfile.TemporaryDirectory(prefix="stormwatch-card-") as folder:
        (Path(folder) / "rule.yaml").write_text(DEMO_NSG_RULE)
        (rule,) = load_rules(Path(folder)).rules
    sample = REPO / "samples" / "activity" / "nsg-rule-write.json"
    normalized = normalize_bodies([(sample.read_bytes(), Position("sample", 0))], include_raw=True)
    bodies = [event.body for event in normalized.events]
    (alert,) = detect_batch(bodies_with_positions(trigger_batch(bodies, "0")), in_memory_detector(rule)).alerts
    subject = subjects_of([alert], [orjson.loads(body) for body in bodies])[alert.alert_id]
    enricher = build_enricher(Settings())  # no storage, no ARM call: the request body holds the rule
    context = AlertContext(lambda: enricher)(StoredAlert(alert, Lifecycle(), False, subject))
    return teams_message(alert, context)
