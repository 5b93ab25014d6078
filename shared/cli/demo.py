"""`python -m shared demo`: the bundled samples through the pipeline on this machine (`make demo`).

Starts its own Azurite (the development ports, or three from `--azurite-port`) unless it already runs,
feeds every sample body to normalize_fn as an Event Hub batch (one partition per sample file), and
prints what went in and what came out. It empties the alert, state and inventory tables, so it refuses a
configured account that is not the emulator unless told `--i-mean-it`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson

from shared.cli import azurite
from shared.cli.local_storage import local_settings, refuse_unless_emulator
from shared.cli.replay import print_detection
from shared.clients import wiring
from shared.clients.dead_letters import BlobDeadLetterStore
from shared.clients.eventhubs import bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.clients.storage import DEFAULT_PORTS, blob_service
from shared.normalize.batch import BatchReport, process_batch
from shared.settings import env_name, get_settings

SAMPLES = azurite.REPO / "samples"
DEMO_ENQUEUED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DASHBOARD_URL = "http://127.0.0.1:7071/api/dashboard?from=2026-11-01&to=2026-11-30"  # the samples' month


def sample_files(root: Path = SAMPLES) -> list[Path]:
    return sorted(root.rglob("*.json"))


def run_demo(data_dir: Path, ports: dict[str, int] = DEFAULT_PORTS, i_mean_it: bool = False,
             out: TextIO = sys.stdout) -> int:
    storage = local_settings(get_settings(), ports)
    refuse_unless_emulator(storage, i_mean_it, "the demo")
    started = azurite.ensure_dev_instance(data_dir / "azurite", data_dir / "azurite.log", ports)
    print(f"Azurite {'started' if started else 'already running'} on 127.0.0.1:{ports['blob']}-{ports['table']} "
          f"(data in {data_dir / 'azurite'})\n", file=out)
    if storage.storage_connection_string:  # the configured one, else this Azurite's
        os.environ[env_name("storage_connection_string")] = storage.storage_connection_string
    os.environ["STORMWATCH_PUBLISHER"] = "memory"
    # Show the routing table at work: identity logs also go to an identity team's hub.
    os.environ.setdefault("STORMWATCH_ROUTES", '{"signin": ["identity"], "audit": ["identity"]}')
    # The per-batch log line is for Application Insights; the tables below say the same for a person.
    logging.getLogger("stormwatch").setLevel(logging.ERROR)
    wiring.reset()
    settings = get_settings()
    reports: list[tuple[str, BatchReport]] = []
    for partition, path in enumerate(sample_files()):
        # A fixed enqueued time makes a second demo run redeliver the very same batches: their dead
        # letters land in the same blobs instead of piling up.
        events = trigger_batch([path.read_bytes()], partition=str(partition), enqueued_time=DEMO_ENQUEUED)
        report = process_batch(bodies_with_positions(events), wiring.publisher(), wiring.dead_letter_store(),
                               settings)
        reports.append((path.relative_to(SAMPLES).as_posix(), report))
    print_normalize_table(reports, out)
    publisher = wiring.publisher()
    if isinstance(publisher, InProcessPublisher):
        print_fan_out(publisher, out)
    print_dead_letters(settings.deadletter_container, out)
    if isinstance(publisher, InProcessPublisher):
        print_detection(publisher, settings, out)
        print_dashboard_address(settings.inventory_table, ports, out)
    return 0


def print_dashboard_address(table: str, ports: dict[str, int], out: TextIO) -> None:
    """Detect kept the inventory while it ran: say how to look at it (nothing is left running)."""
    chosen = "" if ports == DEFAULT_PORTS else f" AZURITE_PORT={ports['blob']}"
    print(f"dashboard — the inventory detect kept (table '{table}'). Serve the app's HTTP functions over this "
          f"Azurite with\n  make dashboard{chosen}    # python -m shared serve --azurite-port {ports['blob']}\n"
          f"and open\n  {DASHBOARD_URL}\n", file=out)


def print_normalize_table(reports: list[tuple[str, BatchReport]], out: TextIO) -> None:
    print("normalize_fn — records in, events out, dead letters per sample body", file=out)
    print(f"{'sample':<42} {'in':>4} {'out':>4} {'dead':>4}  events by source", file=out)
    totals = Counter[str]()
    for name, report in reports:
        sources = ", ".join(f"{source} {count}" for source, count in sorted(report.events_by_source.items()))
        print(f"{name:<42} {report.records_in:>4} {report.events_out:>4} {report.dead_letters:>4}  {sources}",
              file=out)
        totals.update({"in": report.records_in, "out": report.events_out, "dead": report.dead_letters})
    print(f"{'total':<42} {totals['in']:>4} {totals['out']:>4} {totals['dead']:>4}  "
          f"(in = out + dead: {totals['in'] == totals['out'] + totals['dead']})\n", file=out)


def print_fan_out(publisher: InProcessPublisher, out: TextIO) -> None:
    print("fan-out — events per hub and source", file=out)
    for hub, events in sorted(publisher.hubs.items()):
        sources = Counter(orjson.loads(event.body)["source"] for event in events)
        listed = ", ".join(f"{source} {count}" for source, count in sorted(sources.items()))
        print(f"  {hub:<12} {len(events):>4}  {listed}", file=out)
    print(file=out)


def print_dead_letters(container: str, out: TextIO) -> None:
    """Read the dead letters back from Blob storage: what an operator would find there, by the ids
    `python -m shared deadletters show` takes."""
    store = BlobDeadLetterStore(blob_service(get_settings()), container)
    print(f"dead letters — stored in blob container '{container}' (python -m shared deadletters show ID)",
          file=out)
    for stored in store.letters():
        letter = stored.letter
        position = "whole body" if letter.record_index is None else f"record {letter.record_index}"
        print(f"  {stored.id}: partition {letter.partition} seq {letter.sequence_number}, {position}: "
              f"{letter.reason}", file=out)
    print(file=out)
