"""`GET|POST /api/alerts/{id}/status`: an alert with its lifecycle and deliveries; setting its status.

Closing (or calling a false positive) an alert raised from a Defender for Cloud alert also dismisses
that alert in Defender when an operator enabled dismissal (STORMWATCH_ALLOW_ALERT_DISMISS), through the
enrich package's dismiss path; a dismissal ARM refuses is reported in the answer and the close stands.

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
from shared.clients.arm import ArmError
from shared.delivery.context import defender_alert_id
from shared.delivery.engine import deliverer
from shared.delivery.lifecycle import StatusChange, StoredAlert, check_alert_id
from shared.delivery.outbox import Outbox
from shared.detect.alerts import Alert
from shared.enrich.api import MAX_BODY_BYTES, read_body
from shared.enrich.service import enricher
from shared.http_errors import InputError, json_response
from shared.settings import SettingsError, get_settings

log = logging.getLogger("stormwatch.alerts")
CLOSING = ("closed", "false_positive")



def alert_document(stored: StoredAlert, outbox: Outbox) -> dict[str, Any]:
    """The stored alert, its lifecycle and its deliveries: this route's answer and `alerts show`'s."""
    deliveries = [row.model_dump(mode="json") for row in outbox.of_alert(stored.alert.alert_id)]
    return {**stored.as_json(), "deliveries": deliveries}


def dismiss_in_defender(alert: Alert, by: str) -> dict[str, Any] | None:
    """Dismiss the Defender alert behind `alert` when enabled; None when there is none or it is disabled."""
    defender = defender_alert_id(alert)
    if defender is None or not get_settings().allow_alert_dismiss:
        return None
    try:
        return enricher().dismiss(defender, by=by).model_dump(mode="json")
    except (InputError, ArmError) as error:
        return {"id": defender, "status": "not dismissed", "message": error.message}
    except SettingsError as error:  # the status change is saved already: say why Defender was not told
        log.error("alert status: Defender dismissal not configured: %s", error)
        return {"id": defender, "status": "not dismissed", "message": "the app settings for ARM are unusable"}


def handle_status(request: func.HttpRequest) -> func.HttpResponse:
    try:
        alert_id = check_alert_id(str(request.route_params.get("id", "")))
        if request.method.upper() == "GET":
            authorize(request, READER)
            current = deliverer()
            found = current.alerts.get(alert_id)
            if found is None:
                raise InputError(f"no alert {alert_id}", status=404)
            return json_response(200, alert_document(found, current.outbox))
        caller = authorize(request, RESPONDER)
        if len(request.get_body()) > MAX_BODY_BYTES:
            raise InputError(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
        change = read_body(request, StatusChange)
        current = deliverer()
        stored = current.alerts.set_status(alert_id, change, caller.name, datetime.now(UTC))
        defender = dismiss_in_defender(stored.alert, caller.name) if change.status in CLOSING else None
        log.info(orjson.dumps({"function": "alert_status", "alert": alert_id, "status": change.status,
                               "by": caller.name, "defender": defender}).decode())
        return json_response(200, {**alert_document(stored, current.outbox), "defender": defender})
    except InputError as error:
        return json_response(error.status, {"error": {"status": error.status, "message": error.message}})
    except AzureError as error:
        log.warning("alerts table unreachable: %s", type(error).__name__)
        return json_response(503, {"error": {"status": 503, "message": "the alerts table cannot be reached now"}},
                             {"Retry-After": "30"})
    except SettingsError as error:
        log.error("alert status: app settings unusable: %s", error)
        return json_response(500, {"error": {"status": 500, "message": "the app settings are unusable"}})
