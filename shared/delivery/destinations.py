"""Sending one alert through one route: webhooks (with `requests`, as the ARM client) and the Logs
Ingestion API (with azure-monitor-ingestion and the app's managed identity).

Every failure is a `DeliveryError` saying whether trying again can help: a receiver that is down, slow,
throttling or misconfigured (a missing app setting, 401/403/404) is retried with backoff; a receiver
that refuses the content itself (400, 413, 415, 422) fails the delivery at once, since the same body
would be refused again.

Webhook requests carry the alert id as `Idempotency-Key` (and `X-Stormwatch-Alert-Id`), so a receiver
drops the rare duplicate (a send whose outcome was lost). With `secret_setting`, the body is signed:
`X-Stormwatch-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError

from shared.clients.arm import retry_after_seconds
from shared.delivery.formats import payload
from shared.delivery.routes import LogAnalytics, Route, Webhook, check_url
from shared.detect.alerts import Alert
from shared.values import format_time

SIGNATURE_HEADER = "X-Stormwatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_REFUSED = frozenset({400, 413, 415, 422})


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


# The alert's context, computed on first call: only once the destination's settings are usable, so a
# route that cannot send yet costs no enrichment.
ContextOf = Callable[[], Mapping[str, Any]]


class Sender(Protocol):
    def __call__(self, route: Route, alert: Alert, context: ContextOf) -> None:
        """Deliver, or raise DeliveryError."""


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _setting(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise DeliveryError(f"app setting {name} is not set", retryable=True)
    return value


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (delta or HTTP date, capped at an hour); a value that is neither reads as a minute."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    seconds = retry_after_seconds(value)
    return 60.0 if seconds is None else seconds


class Destinations:
    """The sender the drain uses: app settings from `environ`, one HTTP session, clients built once."""

    def __init__(self, environ: Mapping[str, str], credential: Callable[[], TokenCredential],
                 session: requests.Session | None = None, ingestion_options: Mapping[str, Any] | None = None) -> None:
        self._environ = environ
        self._credential = credential
        self._session = session or requests.Session()
        # The SDK waits out 429 and 5xx itself (Retry-After honoured) a few times before it raises.
        self._ingestion_options = {"retry_total": 3, "retry_backoff_max": 30, **(ingestion_options or {})}
        self._clients: dict[str, Any] = {}

    def __call__(self, route: Route, alert: Alert, context: ContextOf) -> None:
        if isinstance(route.destination, Webhook):
            self.webhook(route, route.destination, alert, context)
        else:
            self.log_analytics(route, route.destination, alert, context)

    def webhook(self, route: Route, destination: Webhook, alert: Alert, context: ContextOf) -> None:
        url = destination.url or _setting(self._environ, destination.url_setting or "")
        try:
            check_url(url)
        except ValueError as error:
            raise DeliveryError(f"the URL in {destination.url_setting} {error}", retryable=True) from None
        secret = _setting(self._environ, destination.secret_setting) if destination.secret_setting else None
        body = orjson.dumps(payload(destination.format, alert, context(), route.name))
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: alert.alert_id,
                   "X-Stormwatch-Alert-Id": alert.alert_id, "X-Stormwatch-Route": route.name,
                   "User-Agent": "Stormwatch"}
        if secret is not None:
            headers[SIGNATURE_HEADER] = signature(secret.encode(), body)
        try:
            answer = self._session.post(url, data=body, headers=headers, timeout=destination.timeout_seconds,
                                        allow_redirects=False)
        except requests.RequestException as error:  # never the URL in the message: it may hold a token
            raise DeliveryError(f"webhook unreachable: {type(error).__name__}", retryable=True) from None
        if 200 <= answer.status_code < 300:
            return
        raise DeliveryError(f"webhook answered {answer.status_code}", retryable=answer.status_code not in _REFUSED,
                            retry_after=retry_after(answer.headers))

    def log_analytics(self, route: Route, destination: LogAnalytics, alert: Alert, context: ContextOf) -> None:
        endpoint = _setting(self._environ, destination.endpoint_setting)
        rule_id = _setting(self._environ, destination.rule_id_setting)
        try:
            check_url(endpoint)
        except ValueError as error:
            raise DeliveryError(f"{destination.endpoint_setting} {error}", retryable=True) from None
        client = self._ingestion_client(endpoint, destination.timeout_seconds)
        try:
            client.upload(rule_id=rule_id, stream_name=destination.stream, logs=[log_row(alert, context(), route.name)],
                          timeout=destination.timeout_seconds)
        except HttpResponseError as error:
            status = error.status_code or 0
            headers = getattr(error.response, "headers", None) or {}
            raise DeliveryError(f"Logs Ingestion answered {status}", retryable=status not in _REFUSED,
                                retry_after=retry_after(headers)) from None
        except AzureError as error:
            raise DeliveryError(f"Logs Ingestion unreachable: {type(error).__name__}", retryable=True) from None

    def _ingestion_client(self, endpoint: str, timeout: float) -> Any:
        from azure.monitor.ingestion import LogsIngestionClient  # noqa: PLC0415 - only routes that use it pay

        if endpoint not in self._clients:
            self._clients[endpoint] = LogsIngestionClient(endpoint, self._credential(), connection_timeout=timeout,
                                                          **self._ingestion_options)
        return self._clients[endpoint]


def log_row(alert: Alert, context: Mapping[str, Any], route: str) -> dict[str, Any]:
    """One row of the StormwatchAlerts_CL stream (columns declared in infra/modules/loganalytics.bicep)."""
    return {"TimeGenerated": format_time(datetime.now(UTC)), "AlertTime": format_time(alert.time),
            "AlertId": alert.alert_id, "RuleId": alert.rule_id, "Title": alert.title, "Severity": alert.severity,
            "Summary": alert.summary, "EventCount": alert.count, "FirstSeen": format_time(alert.first_seen),
            "LastSeen": format_time(alert.last_seen), "GroupValues": alert.group, "EventIds": alert.event_ids,
            "Tags": alert.tags, "Context": dict(context), "Route": route}
