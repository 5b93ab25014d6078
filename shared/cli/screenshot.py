"""The dashboard of the bundled samples in headless Chromium: for docs/screenshot.py and the browser test.

`sample_inventory` runs every sample through normalize and detect (the demo's path) into the tables
the settings name; `capture` loads a URL in Debian's `chromium` with a fresh profile and no network
beyond what the page asks for (and the dashboard asks for nothing), writes a PNG and returns the DOM.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from shared.cli.demo import sample_files
from shared.cli.replay import detect_published, local_detector
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.clients.eventhubs import bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.clients.storage import table_service
from shared.detect.alerts import Alert
from shared.detect.engine import load_pack
from shared.normalize.batch import process_batch
from shared.settings import Settings

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


def capture(chromium: str, url: str, png: Path) -> str:
    """Screenshot `url` into `png` and return its DOM as Chromium built it (two runs, fresh profiles)."""
    def run(*arguments: str) -> str:
        with tempfile.TemporaryDirectory(prefix="stormwatch-chromium-") as profile:
            done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW}",  # noqa: S603
                                   *arguments, url], capture_output=True, text=True, timeout=90, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout

    run(f"--screenshot={png}")
    return run("--dump-dom")
