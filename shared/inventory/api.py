"""The HTTP surface of inventory_fn: `GET /api/inventory` (JSON) and `GET /api/dashboard` (HTML).

Both read the same answer (`inventory_answer`): the aggregates of one subscription, or all, over a
range of days, merged into daily totals and Top-X tables, with names from the subscription catalog.
The dashboard is that answer drawn as one page (`shared.inventory.dashboard`), so the two can never disagree.
Each latest alert carries its lifecycle status and owner, and the answer lists the failed deliveries
(`shared.delivery`), so an analyst sees what nobody has picked up and what never reached its destination.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.caller import READER, authorize
from shared.clients.storage import table_service
from shared.delivery.lifecycle import AlertRows, Lifecycle
from shared.delivery.outbox import Outbox
from shared.detect.engine import current_rules
from shared.detect.inventory_aggregates import DIMENSIONS, TENANT, TOTALS, summarize
from shared.detect.inventory_table import InventoryTable, inventory_table
from shared.detect.subscriptions import SubscriptionCatalog, load_catalog
from shared.http_errors import InputError, json_response
from shared.settings import SettingsError, get_settings

log = logging.getLogger("stormwatch.inventory")
DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_TOP = 20
DEFAULT_TOP = 10
MAX_FAILED_DELIVERIES = 20
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SUBSCRIPTION = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Query:
    subscription: str | None  # None: every subscription (and the tenant)
    first: date
    last: date
    top: int


def parse_query(params: Mapping[str, str], today: date) -> Query:
    """`subscription`, `from`, `to` (YYYY-MM-DD, inclusive), `top`: checked, with the defaults filled in."""
    subscription = (params.get("subscription") or "").strip().lower() or None
    if subscription is not None and subscription != TENANT and not _SUBSCRIPTION.match(subscription):
        raise InputError(f"'subscription' must be a subscription GUID or '{TENANT}'")
    last = _day(params, "to") or today
    try:
        first = _day(params, "from") or last - timedelta(days=DEFAULT_DAYS - 1)
    except OverflowError:  # `to` in the first days of year 1: no 30-day range ends there
        raise InputError(f"'to' leaves no room for the default {DEFAULT_DAYS}-day range: give 'from' too") from None
    if first > last:
        raise InputError("'from' must not be after 'to'")
    if (last - first).days >= MAX_DAYS:
        raise InputError(f"the range may cover at most {MAX_DAYS} days")
    top = params.get("top") or str(DEFAULT_TOP)
    if not top.isdigit() or not 1 <= int(top) <= MAX_TOP:
        raise InputError(f"'top' must be a number from 1 to {MAX_TOP}")
    return Query(subscription, first, last, int(top))


def _day(params: Mapping[str, str], name: str) -> date | None:
    value = params.get(name)
    if not value:
        return None
    if _DAY.match(value):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(value)
    raise InputError(f"'{name}' must be a date as YYYY-MM-DD")


def inventory_answer(table: InventoryTable, catalog: SubscriptionCatalog, query: Query) -> dict[str, Any]:
    """The JSON document of `/api/inventory`; every day of the range is present (zeros when quiet)."""
    summary = summarize(table.read(query.subscription, query.first, query.last), query.top)
    days = [query.first + timedelta(days=offset) for offset in range((query.last - query.first).days + 1)]
    zero = dict.fromkeys(TOTALS, 0)
    return {
        "subscription": query.subscription, "from": query.first.isoformat(), "to": query.last.isoformat(),
        "totals": summary.totals,
        "days": [{"day": day.isoformat(), **summary.days.get(day.isoformat(), zero)} for day in days],
        "subscriptions": [_subscription(catalog, subscription, events)
                          for subscription, events in summary.subscriptions.items()],
        "top": {name: [{"value": value, "events": count} for value, count in summary.top[name].items()]
                for name in DIMENSIONS},
        "latest_alerts": [{**alert, "subscription_name": _name(catalog, alert["subscription"])}
                          for alert in summary.latest_alerts],
        "catalog": [_subscription(catalog, subscription, None) for subscription in catalog.subscriptions],
    }


def with_lifecycle(answer: dict[str, Any], rows: AlertRows, outbox: Outbox) -> dict[str, Any]:
    """The answer with each latest alert's status and owner, and the latest failed deliveries."""
    latest = []
    for alert in answer["latest_alerts"]:
        stored = rows.get(alert["alert_id"])
        lifecycle = stored.lifecycle if stored is not None else Lifecycle()
        latest.append({**alert, "status": lifecycle.status, "owner": lifecycle.owner})
    failed = [row.model_dump(mode="json") for row in outbox.failed(MAX_FAILED_DELIVERIES)]
    return {**answer, "latest_alerts": latest, "failed_deliveries": failed}


def _subscription(catalog: SubscriptionCatalog, subscription: str, events: int | None) -> dict[str, Any]:
    entry = catalog.subscriptions.get(subscription)
    described = {"id": subscription, "name": _name(catalog, subscription),
                 "environment": None if entry is None else entry.environment}
    return described if events is None else {**described, "events": events}


def _name(catalog: SubscriptionCatalog, subscription: str) -> str:
    return "Entra ID tenant" if subscription == TENANT else catalog.name_of(subscription)


@dataclass(frozen=True)
class _Reader:
    inventory: InventoryTable
    catalog: SubscriptionCatalog
    alerts: AlertRows
    outbox: Outbox


_readers: dict[str, tuple[tuple[object, ...], _Reader]] = {}
_building = threading.Lock()


def _reader() -> _Reader:
    """The table clients and catalog of this process, rebuilt when the settings or the rules in use change."""
    settings = get_settings()
    folder = current_rules().folder  # the catalog may come from the rules container
    signature = (settings.storage_connection_string, settings.table_endpoint, settings.inventory_table,
                 folder, settings.alerts_table, settings.deliveries_table)
    with _building:
        built = _readers.get("current")
        if built is None or built[0] != signature:
            service = table_service(settings)
            built = signature, _Reader(inventory_table(service, settings.inventory_table), load_catalog(folder),
                                       AlertRows(service.get_table_client(settings.alerts_table)),
                                       Outbox(service.get_table_client(settings.deliveries_table)))
            _readers["current"] = built
        return built[1]


def handle(request: func.HttpRequest, render: Callable[[dict[str, Any]], func.HttpResponse]) -> func.HttpResponse:
    """One request to its answer: 401/403 for a caller without the reader role, 400 for bad parameters, 503
    when the table cannot be read."""
    params = {name: value for name, value in request.params.items() if isinstance(value, str)}
    try:
        authorize(request, READER)
        query = parse_query(params, datetime.now(UTC).date())
        reader = _reader()
        answer = inventory_answer(reader.inventory, reader.catalog, query)
        return render(with_lifecycle(answer, reader.alerts, reader.outbox))
    except InputError as error:
        return json_response(error.status, {"error": {"status": error.status, "message": error.message}})
    except AzureError as error:
        log.warning("inventory table unreadable: %s", type(error).__name__)
        return json_response(503, {"error": {"status": 503, "message": "the inventory table cannot be read now"}},
                             {"Retry-After": "30"})
    except SettingsError as error:
        log.error("inventory: app settings unusable: %s", error)
        return json_response(500, {"error": {"status": 500, "message": "the app settings are unusable"}})

