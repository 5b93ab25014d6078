"""Fixtures of the delivery tests: fresh alerts and outbox tables in the session's Azurite, alerts saved
as detection saves them, and a deliverer over a routes file written on the fly."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import TokenCredential
from azure.data.tables import TableServiceClient

from shared.cli import azurite
from shared.clients import wiring
from shared.delivery.destinations import Destinations
from shared.delivery.engine import Deliverer, Enrich, build_deliverer, no_context
from shared.delivery.routes import load_routes
from shared.detect.alerts import Alert, TableAlertStore, alert_id
from shared.detect.rules.model import Severity
from tests.enrich.fake_arm import SUBSCRIPTION, FakeArm, running

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def make_alert(number: int, *, rule_id: str = "role-assignment-added", severity: Severity = "high",
               tags: list[str] | None = None, **fields: Any) -> Alert:
    values: dict[str, Any] = {
        "alert_id": alert_id(rule_id, f"key-{number}", f"evt-{number}"), "rule_id": rule_id,
        "title": "Role assignment added", "severity": severity, "time": T0 + timedelta(minutes=number),
        "group": {"actor": f"dave{number}@contoso.example"}, "count": 1, "first_seen": T0, "last_seen": T0,
        "event_ids": [f"evt-{number}"], "summary": f"dave{number}@contoso.example added Owner on rg-prod-web",
        "tags": tags if tags is not None else ["attack.persistence", "attack.t1098"]}
    values.update(fields)
    return Alert.model_validate(values)


@dataclass
class DeliveryTables:
    connection_string: str
    alerts: str
    deliveries: str
    folder: Path

    def service(self) -> TableServiceClient:
        return TableServiceClient.from_connection_string(self.connection_string)

    def save(self, *alerts: Alert) -> None:
        """As detection does (shared.detect.alerts.emit_alerts): the row, marked not yet routed."""
        store = TableAlertStore(self.service().get_table_client(self.alerts))
        for alert in alerts:
            store.save(alert)

    def routes(self, text: str) -> Path:
        (self.folder / "routes.yaml").write_text(textwrap.dedent(text))
        return self.folder

    def deliverer(self, environ: dict[str, str], enrich: Enrich = no_context,
                  credential: TokenCredential | None = None, *, broken: bool = False, **options: Any) -> Deliverer:
        """Over the routes file as written; `broken`: the file is expected to have an error."""
        routes = load_routes(self.folder)
        assert bool(routes.errors) == broken, [str(error) for error in routes.errors]
        return build_deliverer(self.service(), alerts_table=self.alerts, deliveries_table=self.deliveries,
                               routes=routes, send=Destinations(environ, lambda: _given(credential), **options),
                               enrich=enrich)


def _given(credential: TokenCredential | None) -> TokenCredential:
    assert credential is not None, "webhook routes need no credential"
    return credential


@pytest.fixture
def delivery_tables(app_env: pytest.MonkeyPatch, azurite_instance: azurite.Azurite,
                    tmp_path: Path) -> Iterator[DeliveryTables]:
    suffix = uuid.uuid4().hex[:10]
    tables = DeliveryTables(azurite_instance.connection_string, f"alerts{suffix}", f"deliveries{suffix}", tmp_path)
    app_env.setenv("STORMWATCH_ALERTS_TABLE", tables.alerts)
    app_env.setenv("STORMWATCH_DELIVERIES_TABLE", tables.deliveries)
    app_env.setenv("STORMWATCH_RULES_DIR", str(tmp_path))
    yield tables
    service = tables.service()
    service.delete_table(tables.alerts)
    service.delete_table(tables.deliveries)


@pytest.fixture
def arm(app_env: pytest.MonkeyPatch) -> Iterator[FakeArm]:
    for fake in running():
        app_env.setenv("STORMWATCH_ARM_ENDPOINT", fake.url)
        app_env.setenv("STORMWATCH_SUBSCRIPTION_ID", SUBSCRIPTION)
        app_env.setenv("STORMWATCH_SERVICE_TAGS_REGION", "eastus")  # the fake ARM's tags
        app_env.setenv("STORMWATCH_ENRICH_CACHE_TABLE", f"enrich{uuid.uuid4().hex[:10]}")  # no hits from other tests
        wiring.reset()
        yield fake
