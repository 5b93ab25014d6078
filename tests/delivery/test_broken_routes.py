"""A routes.yaml with an error: new alerts keep reaching the routes that load, run after run, and once the
file is fixed each alert routed meanwhile reaches the route that was broken, once, and no other route twice."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.delivery import engine
from shared.delivery.engine import Deliverer, run_delivery
from shared.delivery.lifecycle import Lifecycle, StoredAlert
from shared.delivery.routes import load_routes
from shared.detect.alerts import ROUTED, alert_entity
from tests.delivery.conftest import DeliveryTables, make_alert
from tests.delivery.receiver import Receiver, receiving

BROKEN = "not a setting"  # not an app setting's name: the route "late" does not load
ROUTES = textwrap.dedent("""
    routes:
      - name: soc
        destination: {{type: webhook, url_setting: HOOK_SOC}}
        backoff_seconds: 0
      - name: late
        destination: {{type: webhook, url_setting: "{late}"}}
        backoff_seconds: 0
    """)


def two_routes(tables: DeliveryTables, late_setting: str) -> None:
    """"soc" always loads; "late" only with a valid setting name."""
    tables.routes(ROUTES.format(late=late_setting))


def hooks(receiver: Receiver) -> dict[str, str]:
    return {"HOOK_SOC": receiver.url + "/soc", "HOOK_LATE": receiver.url + "/late"}


def received_by(receiver: Receiver, route: str) -> list[str]:
    """The alert ids a route's receiver got, one per request, sorted (duplicates kept)."""
    return sorted(request.headers["idempotency-key"] for request in receiver.received
                  if request.path == f"/hook/{route}")


def small(deliverer: Deliverer) -> Deliverer:
    deliverer.max_per_run = 2
    return deliverer


def test_a_broken_file_keeps_routing_new_alerts_past_the_first_batch(delivery_tables: DeliveryTables) -> None:
    two_routes(delivery_tables, BROKEN)
    alerts = [make_alert(number) for number in range(5)]
    delivery_tables.save(*alerts)
    with receiving() as receiver:
        deliverer = small(delivery_tables.deliverer(hooks(receiver), broken=True))
        runs = [run_delivery(deliverer) for _ in range(4)]
    assert received_by(receiver, "soc") == sorted(alert.alert_id for alert in alerts)
    assert received_by(receiver, "late") == []
    assert [run.alerts_routed_partly for run in runs] == [2, 2, 1, 0]  # at most max_per_run a run
    assert [run.alerts_routed for run in runs] == [0, 0, 0, 0]
    assert [run.alerts_awaiting_routes for run in runs] == [2, 4, 5, 5]
    assert runs[-1].deliveries_added == 0 and runs[-1].route_errors
    assert '"alerts_awaiting_routes":5' in runs[-1].as_log()


def test_once_fixed_each_alert_routed_meanwhile_reaches_the_fixed_route_exactly_once(
        delivery_tables: DeliveryTables) -> None:
    two_routes(delivery_tables, BROKEN)
    alerts = [make_alert(number) for number in range(3)]
    delivery_tables.save(*alerts)
    ids = sorted(alert.alert_id for alert in alerts)
    with receiving() as receiver:
        broken = small(delivery_tables.deliverer(hooks(receiver), broken=True))
        for _ in range(2):
            run_delivery(broken)
        assert received_by(receiver, "soc") == ids  # the third alert too, past the first batch of two
        two_routes(delivery_tables, "HOOK_LATE")
        fixed = small(delivery_tables.deliverer(hooks(receiver)))
        runs = [run_delivery(fixed) for _ in range(3)]
    assert received_by(receiver, "late") == ids
    assert received_by(receiver, "soc") == ids  # not sent again
    assert [(run.alerts_routed, run.deliveries_added, run.alerts_awaiting_routes) for run in runs] == [
        (2, 2, 1), (1, 1, 0), (0, 0, 0)]
    assert all(row.status == "delivered" for alert_id in ids for row in fixed.outbox.of_alert(alert_id))
    assert all(not stored.as_json()["routed_partly"] for alert_id in ids if (stored := fixed.alerts.get(alert_id)))


def test_a_route_reached_while_broken_is_not_sent_again_after_its_row_was_forgotten(
        delivery_tables: DeliveryTables) -> None:
    """Broken for longer than delivered rows are kept: routing again must not re-add the healthy route."""
    two_routes(delivery_tables, BROKEN)
    alert = make_alert(1)
    delivery_tables.save(alert)
    with receiving() as receiver:
        broken = delivery_tables.deliverer(hooks(receiver), broken=True)
        assert run_delivery(broken).delivered == 1
        broken.clock = lambda: datetime.now(UTC) + timedelta(days=31)
        assert run_delivery(broken).forgotten == 1
        two_routes(delivery_tables, "HOOK_LATE")
        fixed = run_delivery(delivery_tables.deliverer(hooks(receiver)))
    assert (fixed.alerts_routed, fixed.deliveries_added, fixed.delivered) == (1, 1, 1)
    assert [request.path for request in receiver.received] == ["/hook/soc", "/hook/late"]


def test_rows_of_earlier_releases_routed_unrouted_or_without_the_mark(delivery_tables: DeliveryTables) -> None:
    two_routes(delivery_tables, "HOOK_LATE")
    done, owed, before_delivery = make_alert(1), make_alert(2), make_alert(3)
    table = delivery_tables.service().create_table_if_not_exists(delivery_tables.alerts)
    table.upsert_entity({**alert_entity(done), ROUTED: True})
    table.upsert_entity({**alert_entity(owed), ROUTED: False})
    table.upsert_entity(alert_entity(before_delivery))  # saved before delivery existed: never routed
    with receiving() as receiver:
        deliverer = delivery_tables.deliverer(hooks(receiver))
        report = run_delivery(deliverer)
    assert (report.alerts_routed, report.alerts_awaiting_routes) == (1, 0)
    assert received_by(receiver, "soc") == received_by(receiver, "late") == [owed.alert_id]
    assert [deliverer.alerts.get(alert.alert_id) is not None for alert in (done, owed, before_delivery)] == [True] * 3


def test_routing_records_what_a_broken_file_reached_and_later_adds_only_the_rest(tmp_path: Path) -> None:
    alert = make_alert(1)
    (tmp_path / "routes.yaml").write_text(ROUTES.format(late=BROKEN))
    new = StoredAlert(alert, Lifecycle(), False)
    partly = engine.routing_of(new, load_routes(tmp_path))
    assert ([route.name for route in partly.add], partly.partly) == (["soc"], frozenset({"soc"}))

    (tmp_path / "routes.yaml").write_text(ROUTES.format(late="HOOK_LATE"))
    again = engine.routing_of(new._replace(routed=True, partly_routed=partly.partly), load_routes(tmp_path))
    assert ([route.name for route in again.add], again.partly) == (["late"], None)
