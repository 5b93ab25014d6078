"""normalize → detect on this machine, through the functions' own code path.

Bodies become Event Hub batches built by the host's converter (`trigger_batch`, batches of at most
host.json's maxEventBatchSize), normalize_fn's `process_batch` publishes into an in-process publisher,
and its normalized events become detect_fn's batches on the same partition. State and alerts live in
Table Storage (Azurite by default), so a second replay of the same input is a redelivery: the
watermarks skip every event and no alert is new. When the rules folder holds a routes.yaml, the new
alerts then go through it as delivery_fn's timer would send them (`deliver_through_routes`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from azure.data.tables import TableServiceClient

from shared.clients.dead_letters import BlobDeadLetterStore
from shared.clients.eventhubs import bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher, OutgoingEvent
from shared.clients.storage import blob_service, table_service
from shared.delivery.engine import DeliveryReport, deliverer_for, run_delivery
from shared.detect import day_tables
from shared.detect.alerts import Alert, TableAlertStore
from shared.detect.engine import RULES_DIR, Detector, DetectReport, detect_batch
from shared.detect.inventory_table import inventory_table
from shared.detect.rules.loader import ROUTES_FILE, load_rules
from shared.detect.rules.rule import Rule
from shared.normalize.batch import process_batch
from shared.settings import Settings

# host.json `maxEventBatchSize`: replays cut input into the batches the host would deliver.
BATCH_SIZE = 100


@dataclass
class ReplayResult:
    records_in: int = 0
    events: int = 0
    dead_letters: int = 0
    reports: list[DetectReport] = field(default_factory=list)

    @property
    def alerts(self) -> list[Alert]:
        return [alert for report in self.reports for alert in report.alerts]

    @property
    def matched(self) -> int:
        return sum(sum(report.matched.values()) for report in self.reports)

    @property
    def repeated(self) -> int:
        return sum(report.alerts_repeated for report in self.reports)


@dataclass
class LocalDetector:
    """A detector over the settings' tables, with the table stores at hand for `--fresh`."""

    detector: Detector
    alert_store: TableAlertStore

    def start_fresh(self) -> int:
        """Empty the state and alerts tables. Returns the entities removed."""
        inventory = self.detector.inventory.state.clear(datetime.now(UTC)) if self.detector.inventory else 0
        return self.detector.state.clear(datetime.now(UTC)) + self.alert_store.clear() + inventory


def local_detector(rules: list[Rule], service: TableServiceClient, settings: Settings) -> LocalDetector:
    """Tables are created now, which also proves the endpoint answers before any work is done. Dead
    letters go to the settings' Blob container, as normalize_fn's do (`deadletters list` shows them)."""
    state = day_tables.state_table(service, settings.state_table)
    alert_store = TableAlertStore(service.get_table_client(settings.alerts_table))
    alert_store.ensure_table()
    detector = Detector(rules=rules, state=state, alerts=alert_store,
                        publisher=InProcessPublisher(), alerts_hub=settings.alerts_hub,
                        dead_letters=BlobDeadLetterStore(blob_service(settings), settings.deadletter_container),
                        inventory=inventory_table(service, settings.inventory_table))
    return LocalDetector(detector, alert_store)


def partition_for(name: str, content: bytes | None = None) -> str:
    """One partition per input: a file's absolute path (stable across runs), stdin's content hash."""
    if content is not None:
        return f"stdin:{hashlib.sha256(content).hexdigest()[:16]}"
    return str(Path(name).resolve())


def replay_bodies(bodies: Sequence[bytes], partition: str, detector: Detector, settings: Settings) -> ReplayResult:
    """One input's bodies (sequence number = position) through normalize, then detect; dead letters go
    to the detector's store, which is normalize_fn's Blob container for `python -m shared replay`."""
    publisher = InProcessPublisher()
    result = ReplayResult()
    for first in range(0, len(bodies), BATCH_SIZE):
        batch = trigger_batch(list(bodies[first:first + BATCH_SIZE]), partition, first_sequence=first)
        report = process_batch(bodies_with_positions(batch), publisher, detector.dead_letters, settings)
        result.records_in += report.records_in
        result.events += report.events_out
        result.dead_letters += report.dead_letters
    normalized = [event.body for event in publisher.hubs.get(settings.normalized_hub, [])]
    result.reports = detect_partition(normalized, partition, detector)
    return result


def detect_partition(bodies: Sequence[bytes], partition: str, detector: Detector) -> list[DetectReport]:
    """Normalized events of one partition, in order, as the host's batches."""
    reports = []
    for first in range(0, len(bodies), BATCH_SIZE):
        batch = trigger_batch(list(bodies[first:first + BATCH_SIZE]), partition, first_sequence=first)
        reports.append(detect_batch(bodies_with_positions(batch), detector))
    return reports


def detect_published(events: Sequence[OutgoingEvent], detector: Detector) -> list[Alert]:
    """The demo: published events routed as Event Hubs would (one partition per partition key)."""
    partitions: dict[str, list[bytes]] = defaultdict(list)
    for event in events:
        partitions[event.partition_key].append(event.body)
    alerts: list[Alert] = []
    for partition, bodies in partitions.items():
        for report in detect_partition(bodies, partition, detector):
            alerts.extend(report.alerts)
    return sorted(alerts, key=lambda alert: (alert.time, alert.alert_id))


def print_alerts(alerts: Sequence[Alert], out: TextIO, width: int = 160) -> None:
    """A short table: when (event time), severity, rule, and the summary cut to the line."""
    print(f"{'time (UTC)':<17} {'severity':<9} {'rule':<29} summary", file=out)
    for alert in alerts:
        head = f"{alert.time:%Y-%m-%d %H:%M} {alert.severity:<9} {alert.rule_id:<29} "
        room = max(20, width - len(head))
        summary = alert.summary if len(alert.summary) <= room else alert.summary[:room - 1] + "…"
        print(head + summary, file=out)


def print_detection(publisher: InProcessPublisher, settings: Settings, out: TextIO) -> None:
    """`make demo`: detect over what normalize published, from empty state every run."""
    pack = load_rules(Path(settings.rules_dir) if settings.rules_dir else RULES_DIR, settings.rule_statuses,
                      settings.unknown_subscriptions)
    service = table_service(settings)
    local = local_detector(pack.rules, service, settings)
    local.start_fresh()  # the demo's Azurite keeps its data between runs: show the alerts every time
    alerts = detect_published(publisher.hubs.get(settings.normalized_hub, []), local.detector)
    print(f"detect_fn — alerts the samples raise ({len(pack.rules)} rules from "
          f"{settings.rules_dir or 'rules/'}, fresh state in table '{settings.state_table}')", file=out)
    for error in pack.errors:
        print(f"  rule file not loaded: {error}", file=out)
    print_alerts(alerts, out)
    print(f"{len(alerts)} alerts, also stored in table '{settings.alerts_table}'. Replay any file: "
          f"python -m shared replay samples/attack/delete-spike.json\n", file=out)


def deliver_through_routes(settings: Settings, rules_dir: Path) -> DeliveryReport | None:
    """One delivery_fn run over the settings' tables with `rules_dir/routes.yaml`; None without that file.

    Webhook URLs, secrets and the Logs Ingestion settings come from the environment, as app settings do;
    a delivery that fails waits in the outbox (`python -m shared alerts list --failed`) for the next run.
    """
    if not (rules_dir / ROUTES_FILE).is_file():
        return None
    return run_delivery(deliverer_for(settings.model_copy(update={"rules_dir": str(rules_dir)})))
