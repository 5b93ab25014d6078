"""delivery_fn's work, once a minute: route the alerts detection saved, then drain the outbox.

1. Routing: every alert row marked not yet routed gets one outbox row per matching route, then the
   mark. While routes.yaml has an error, an alert gets rows for the routes that loaded and is marked
   partly routed, naming them; once the file loads cleanly it is routed again through the routes it has
   not reached yet, so a route fixed later still receives what was raised while it was broken and no
   route receives an alert twice. At most `max_per_run` alerts a run, new ones first.
2. Draining: each due row is claimed, its alert enriched (bounded in time), sent, and the outcome
   recorded: delivered; pending again after a backoff (doubling from the route's `backoff_seconds`, or
   the receiver's Retry-After when longer); or failed after `max_attempts` or a refusal of the content.
   Once one delivery to a route fails for a reason worth retrying, that route's other rows wait for the
   next run instead of each spending a timeout on a receiver that is down. A run stops after
   `max_per_run` rows or its time budget; the rest are still due next minute.
3. Housekeeping: delivered rows older than KEEP_DELIVERED are deleted, so each minute's scans stay small.

Only an outage of the tables raises (the timer runs again); nothing a route, alert or receiver holds does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from azure.data.tables import TableServiceClient

from shared.clients.storage import default_credential, is_outage, table_service
from shared.delivery.context import AlertContext
from shared.delivery.destinations import DeliveryError, Destinations, Sender
from shared.delivery.lifecycle import AlertRows, StoredAlert
from shared.delivery.outbox import MAX_ERROR_CHARS, Claimed, Delivery, Outbox, backoff
from shared.delivery.routes import Route, RouteTable, load_routes
from shared.detect.engine import RULES_DIR, current_rules
from shared.enrich.service import enricher
from shared.settings import Settings, get_settings
from shared.values import for_log

log = logging.getLogger("stormwatch.delivery")
Enrich = Callable[[StoredAlert], dict[str, Any]]
MAX_PER_RUN = 500
RUN_BUDGET = timedelta(minutes=4)  # the timer fires every minute; the host's timeout is longer
CLAIM_MARGIN = timedelta(seconds=60)
KEEP_DELIVERED = timedelta(days=30)  # delivered rows are deleted after this (README "The guarantee")
AWAITING_COUNT_LIMIT = 10_000  # partly routed alerts are counted up to this, so the count stays a bounded read


def no_context(_stored: StoredAlert) -> dict[str, Any]:
    return {}


@dataclass
class Deliverer:
    alerts: AlertRows
    outbox: Outbox
    routes: RouteTable
    send: Sender
    enrich: Enrich = no_context
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    max_per_run: int = MAX_PER_RUN
    budget: timedelta = RUN_BUDGET


@dataclass
class DeliveryReport:
    """What one run did: one structured log line."""

    alerts_routed: int = 0  # through every route of a clean routes.yaml
    alerts_routed_partly: int = 0  # through the routes that loaded from a broken routes.yaml
    alerts_awaiting_routes: int = 0  # partly routed, routed again once routes.yaml loads cleanly (up to 10,000)
    deliveries_added: int = 0
    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    waiting: int = 0  # due rows left for the next run (their route is down, or claimed by another run)
    forgotten: int = 0  # delivered rows past KEEP_DELIVERED, deleted
    route_errors: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    def as_log(self) -> str:
        return orjson.dumps({"function": "delivery", **self.__dict__}).decode()


class Routing(NamedTuple):
    """One alert's routing now: the routes to add outbox rows for, and the routes to record as reached
    when routes.yaml is broken (None: routed through the complete file)."""

    add: list[Route]
    partly: frozenset[str] | None


def routing_of(stored: StoredAlert, routes: RouteTable) -> Routing:
    """The matching routes the alert has not reached yet. Those reached while the file was broken are
    skipped even when their outbox row is gone (delivered rows are forgotten after KEEP_DELIVERED): adding
    the row again would send the alert twice."""
    reached = stored.partly_routed or frozenset()
    matching = routes.matching(stored.alert)
    add = [route for route in matching if route.name not in reached]
    if routes.errors:
        return Routing(add, reached | {route.name for route in matching})
    return Routing(add, None)


def route_pending(deliverer: Deliverer, now: datetime, report: DeliveryReport) -> None:
    """New alerts first, then, once routes.yaml loads cleanly, those routed while it was broken; at most
    `max_per_run` a run. Every alert routed leaves the scan that found it, so each run takes the next ones."""
    alerts, routes, limit = deliverer.alerts, deliverer.routes, deliverer.max_per_run
    new = alerts.unrouted(limit)
    room = limit - len(new)
    again = alerts.partly_routed(room) if not routes.errors and room > 0 else []
    for stored in [*new, *again]:
        routing = routing_of(stored, routes)
        for route in routing.add:
            report.deliveries_added += deliverer.outbox.add(stored.alert.alert_id, route.name,
                                                            _destination(route), now)
        if routing.partly is None:
            alerts.mark_routed(stored.alert.alert_id)
            report.alerts_routed += 1
        else:
            alerts.mark_partly_routed(stored.alert.alert_id, routing.partly)
            report.alerts_routed_partly += 1
    none_left = not routes.errors and len(again) < room  # the scan for them came back short
    report.alerts_awaiting_routes = 0 if none_left else alerts.count_partly_routed(AWAITING_COUNT_LIMIT)


def _destination(route: Route) -> str:
    destination = route.destination
    return f"webhook/{destination.format}" if destination.type == "webhook" else destination.type


def drain(deliverer: Deliverer, report: DeliveryReport) -> None:
    started = time.monotonic()
    down: set[str] = set()
    contexts: dict[str, dict[str, Any]] = {}
    for claimed in list(deliverer.outbox.due(deliverer.clock(), deliverer.max_per_run)):
        route = deliverer.routes.named(claimed.delivery.route)
        over_time = time.monotonic() - started > deliverer.budget.total_seconds()
        if over_time or claimed.delivery.route in down or (route is None and deliverer.routes.errors):
            report.waiting += 1  # a route missing from a broken file may only be broken: keep its rows
            continue
        now = deliverer.clock()
        held = deliverer.outbox.claim(claimed, now + _claim_time(route))
        if held is None:
            report.waiting += 1
            continue
        report.attempted += 1
        outcome = _attempt(deliverer, route, held.delivery, contexts)
        if outcome is None:
            _record(deliverer, held, report, status="delivered", error=None, now=now)
            continue
        error, retryable, wait = outcome
        if retryable and route is not None:
            down.add(route.name)
        attempts = held.delivery.attempts + 1
        if not retryable or route is None or attempts >= route.max_attempts:
            _record(deliverer, held, report, status="failed", error=error, now=now, attempts=attempts)
        else:
            pause = max(backoff(attempts, route.backoff_seconds, route.max_backoff_seconds), wait)
            _record(deliverer, held, report, status="pending", error=error, now=now, attempts=attempts,
                    next_attempt=now + pause)


def _claim_time(route: Route | None) -> timedelta:
    timeout = route.destination.timeout_seconds if route is not None else 0
    return timedelta(seconds=timeout) + CLAIM_MARGIN


def _attempt(deliverer: Deliverer, route: Route | None, delivery: Delivery,
             contexts: dict[str, dict[str, Any]]) -> tuple[str, bool, timedelta] | None:
    """None when delivered; else (why, worth retrying, the least wait the receiver asked for)."""
    if route is None:
        return f"route {delivery.route} is no longer in routes.yaml", False, timedelta(0)
    stored = deliverer.alerts.get(delivery.alert_id)
    if stored is None:
        return "the alert is no longer stored (or its row is unreadable)", False, timedelta(0)
    def context() -> dict[str, Any]:
        if delivery.alert_id not in contexts:
            contexts[delivery.alert_id] = deliverer.enrich(stored)
        return contexts[delivery.alert_id]

    try:
        deliverer.send(route, stored.alert, context)
    except DeliveryError as error:
        return error.message, error.retryable, timedelta(seconds=error.retry_after or 0)
    except Exception as error:
        if is_outage(error):
            raise
        log.exception("route %s: delivery of %s failed unexpectedly", route.name, delivery.alert_id)
        return f"unexpected {type(error).__name__}", True, timedelta(0)
    return None


def _record(deliverer: Deliverer, held: Claimed, report: DeliveryReport, *, status: str, error: str | None,
            now: datetime, attempts: int | None = None, next_attempt: datetime | None = None) -> None:
    delivery = held.delivery
    update: dict[str, Any] = {"status": status, "updated_at": now,
                              "last_error": None if error is None else error[:MAX_ERROR_CHARS],
                              "attempts": delivery.attempts + 1 if attempts is None else attempts,
                              "next_attempt": next_attempt or now}
    if status == "delivered":
        update["delivered_at"] = now
        report.delivered += 1
    elif status == "failed":
        report.failed += 1
        log.warning("route %s: delivery of alert %s failed for good: %s", delivery.route, delivery.alert_id,
                    for_log(error))
    else:
        report.retrying += 1
    deliverer.outbox.record(held, delivery.model_copy(update=update))


def run_delivery(deliverer: Deliverer) -> DeliveryReport:
    """One timer run: route, then drain; logged as one line."""
    started = time.perf_counter()
    report = DeliveryReport(route_errors=[str(error) for error in deliverer.routes.errors])
    route_pending(deliverer, deliverer.clock(), report)
    drain(deliverer, report)
    report.forgotten = deliverer.outbox.forget_delivered(deliverer.clock() - KEEP_DELIVERED, deliverer.max_per_run)
    report.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    level = logging.WARNING if report.failed or report.route_errors else logging.INFO
    log.log(level, report.as_log())
    return report


def build_deliverer(service: TableServiceClient, *, alerts_table: str, deliveries_table: str, routes: RouteTable,
                    send: Sender, enrich: Enrich = no_context) -> Deliverer:
    return Deliverer(alerts=AlertRows(service.get_table_client(alerts_table)),
                     outbox=Outbox(service.get_table_client(deliveries_table)), routes=routes, send=send,
                     enrich=enrich)


def routes_dir(rules_dir: str | None) -> Path:
    return Path(rules_dir) if rules_dir else RULES_DIR


def deliverer_for(settings: Settings, rules_folder: Path | None = None) -> Deliverer:
    """A deliverer over the settings' tables and the routes.yaml of `rules_folder` (default: the settings'
    rules folder); load errors are logged, never raised."""
    routes = load_routes(rules_folder or routes_dir(settings.rules_dir))
    for error in routes.errors:
        log.error("routes.yaml: %s", error)
    return build_deliverer(table_service(settings), alerts_table=settings.alerts_table,
                           deliveries_table=settings.deliveries_table, routes=routes,
                           send=Destinations(os.environ, default_credential), enrich=AlertContext(enricher))


_built: dict[str, tuple[tuple[object, ...], Deliverer]] = {}
_building = threading.Lock()


def deliverer() -> Deliverer:
    """This process's deliverer, with routes.yaml from the rules detect runs (the packaged folder with the
    rules container laid over it), rebuilt when that folder or the settings change."""
    settings = get_settings()
    folder = current_rules().folder
    signature = (folder, settings.alerts_table, settings.deliveries_table, settings.storage_connection_string,
                 settings.table_endpoint)
    with _building:
        built = _built.get("current")
        if built is None or built[0] != signature:
            built = signature, deliverer_for(settings, folder)
            _built["current"] = built
        return built[1]
