"""`GET|POST /api/alerts/{id}/status`: an alert with its lifecycle and deliveries; setting its status.

Reading needs the reader role, changing the responder role (`shared.caller`); the caller's name is
recorded on the alert (`changed_by`) and in the log line. Nothing the caller sends is logged but the
alert id (checked to be 32 hex characters) and the new status.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import orjson
from azure.core.exceptions import AzureError

from shared.caller import READER, RESPONDER, authorize
from shared.delivery.engine import deliverer
from shared.delivery.lifecycle import StatusChange, check_alert_id
from shared.enrich.api import MAX_BODY_BYTES, read_body
from shared.http_errors import InputError
from shared.settings import SettingsError

log = logging.getLogger("stormwatch.alerts")


def answer(status: int, document: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(orjson.dumps(document), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                      **(headers or {})})


def alert_document(alert_id: str) -> dict[str, Any]:
    """The stored alert, its lifecycle and its deliveries; 404 when there is no such alert."""
    current = deliverer()
    stored = current.alerts.get(alert_id)
    if stored is None:
        raise InputError(f"no alert {alert_id}", status=404)
    deliveries = [row.model_dump(mode="json") for row in current.outbox.of_alert(alert_id)]
    return {**stored.as_json(), "deliveries": deliveries}


def handle_status(request: func.HttpRequest) -> func.HttpResponse:
    try:
        alert_id = check_alert_id(str(request.route_params.get("id", "")))
        if request.method.upper() == "GET":
            authorize(request, READER)
            return answer(200, alert_document(alert_id))
        caller = authorize(request, RESPONDER)
        if len(request.get_body()) > MAX_BODY_BYTES:
            raise InputError(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
        change = read_body(request, StatusChange)
        deliverer().alerts.set_status(alert_id, change, caller.name, datetime.now(UTC))
        log.info(orjson.dumps({"function": "alert_status", "alert": alert_id, "status": change.status,
                               "by": caller.name}).decode())
        return answer(200, alert_document(alert_id))
    except InputError as error:
        return answer(error.status, {"error": {"status": error.status, "message": error.message}})
    except AzureError as error:
        log.warning("alerts table unreachable: %s", type(error).__name__)
        return answer(503, {"error": {"status": 503, "message": "the alerts table cannot be reached now"}},
                      {"Retry-After": "30"})
    except SettingsError as error:
        log.error("alert status: app settings unusable: %s", error)
        return answer(500, {"error": {"status": 500, "message": "the app settings are unusable"}})
