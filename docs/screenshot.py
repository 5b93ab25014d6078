"""docs/dashboard.png and docs/teams-card.png from the bundled samples (`make screenshot`), so the
pictures in the docs stay true.

A throw-away Azurite on free ports gets the samples through normalize and detect; `python -m shared
serve` serves the dashboard over it; headless Chromium takes the picture. Nothing is left running.
The Teams card is what delivery sends for the bundled NSG rule write (`demo_message`).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: make the repo importable

from shared.cli import azurite
from shared.cli.screenshot import capture, card_page, demo_message, install_chromium, sample_inventory
from shared.cli.serve import spawn
from shared.settings import Settings

DOCS = Path(__file__).resolve().parent
OUT = DOCS / "dashboard.png"
CARD_OUT = DOCS / "teams-card.png"
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


def write_card(chromium: str, png: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="stormwatch-card-page-") as folder:
        page = Path(folder) / "card.html"
        page.write_text(card_page(demo_message()), encoding="utf-8")
        capture(chromium, page.as_uri(), png, window="620,470")


if __name__ == "__main__":
    sys.exit(main())
