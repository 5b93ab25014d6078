"""The HTTP surface of enrich_fn: routes, input checks, status codes and JSON answers.

Every route is declared once here (`ROUTES`); the function bindings in `enrich_fn` and the OpenAPI
document both read these declarations. `handle` is the whole life of a request: size limit, parsing,
the service call, and the mapping of every expected failure to a 4xx/5xx with a JSON body. Nothing a
caller sends is echoed into logs, and no URL is logged (a function key can ride in `?code=`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import azure.functions as func
import orjson
from pydantic import BaseModel, ValidationError

from shared.caller import READER, RESPONDER, Caller, Role, authorize
from shared.clients.arm import ArmError
from shared.enrich import openapi
from shared.enrich.ip import MAX_IP_LENGTH
from shared.enrich.models import (
    AlertContext,
    AlertReference,
    DismissResult,
    EnrichedEvent,
    ErrorBody,
    ErrorDetail,
    IpContext,
    OperationContext,
    ResourceContext,
)
from shared.enrich.operations import OPERATION_PATTERN, RESULT_PATTERN, SOURCES
from shared.enrich.resource_ids import ALLOWED_TYPE_NAMES, MAX_ID_LENGTH
from shared.http_errors import InputError, json_response
from shared.normalized_event import NormalizedEvent
from shared.settings import SettingsError
from shared.values import for_log

if TYPE_CHECKING:
    from shared.enrich.service import Enricher

logger = logging.getLogger("stormwatch.enrich")
MAX_BODY_BYTES = 64 * 1024
# Deeper JSON than this is refused: answers embed the body a few levels down, and orjson encodes at most
# 255 levels (a real normalized event is a handful deep).
MAX_BODY_DEPTH = 128
_Body = TypeVar("_Body", bound=BaseModel)
Answer = BaseModel | dict[str, Any]


@dataclass(frozen=True)
class Parameter:
    name: str
    location: Literal["path", "query"]
    description: str
    required: bool = True
    pattern: str | None = None
    max_length: int | None = None
    choices: tuple[str, ...] | None = None
    formats: tuple[str, ...] = ()  # any of these JSON Schema formats, e.g. ("ipv4", "ipv6")
    example: str | None = None


@dataclass(frozen=True)
class Route:
    """One HTTP function: its binding (`path` as the Functions route template, no /api prefix) and API."""

    function: str
    method: Literal["GET", "POST"]
    path: str
    summary: str
    run: Callable[[func.HttpRequest, Caller], Answer]
    answer: type[BaseModel] | None
    parameters: tuple[Parameter, ...] = ()
    body: type[BaseModel] | None = None
    example: dict[str, Any] | None = None
    errors: tuple[int, ...] = (400,)
    role: Role = READER  # the app role an Entra ID caller needs (`shared.caller`)


def enricher() -> Enricher:
    """The service, imported by the first request rather than when the host indexes the routes: it brings
    the ARM, Blob, Table and Event Hubs clients, most of a cold start."""
    from shared.enrich.service import enricher as service  # noqa: PLC0415 - cold start

    return service()


def _query(request: func.HttpRequest, name: str) -> str | None:
    value = request.params.get(name)
    return value if isinstance(value, str) else None


def _required(request: func.HttpRequest, name: str) -> str:
    value = _query(request, name)
    if not value:
        raise InputError(f"query parameter '{name}' is required")
    return value


def _route_value(request: func.HttpRequest, name: str) -> str:
    value = request.route_params.get(name)
    return value if isinstance(value, str) else ""


def read_body(request: func.HttpRequest, model: type[_Body]) -> _Body:
    """The JSON body as `model`: 415 for other media types, 400 with the reasons for bad JSON."""
    content_type = (request.headers.get("content-type") or "application/json").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise InputError("send the body as application/json", status=415)
    try:
        document = orjson.loads(request.get_body())
    except orjson.JSONDecodeError as error:
        raise InputError(f"malformed JSON body: {error}") from None
    if json_depth(document) > MAX_BODY_DEPTH:
        raise InputError(f"the JSON body is nested deeper than {MAX_BODY_DEPTH} levels")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
                            for problem in error.errors(include_input=False)[:10])
        raise InputError(f"invalid {model.__name__}: {reasons}") from None


def json_depth(document: Any) -> int:
    """How deeply objects and arrays nest (a scalar is 0), without recursion."""
    deepest, pending = 0, [(document, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in children)
    return deepest


# Examples from the fictional estate of samples/: shown in the document and replayed by its tests.
_SUBSCRIPTION = "/subscriptions/a1b2c3d4-1111-4111-8111-000000000001"
EXAMPLE_RULE_ID = (f"{_SUBSCRIPTION}/resourceGroups/rg-prod-web/providers/Microsoft.Network/networkSecurityGroups/"
                   "nsg-web/securityRules/allow-9753")
EXAMPLE_ALERT_ID = (f"{_SUBSCRIPTION}/resourceGroups/rg-prod-web/providers/Microsoft.Security/locations/eastus/"
                    "alerts/2516820315448223217_a1e47000-0114-4000-8000-000114000001")
EXAMPLE_EVENT = {
    "event_id": "e7e7da7a-0101-4001-8000-000101000001", "source": "activity", "category": "Administrative",
    "time": "2026-11-12T14:03:11.462031Z", "operation": "MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/SECURITYRULES/WRITE",
    "action": "create_or_update", "result": "Start", "actor": "dave@contoso.example",
    "source_ip": "2001:db8:c0:10::d4", "resource_id": EXAMPLE_RULE_ID,
}
_ARM_ERRORS = (400, 403, 404, 502, 503, 504)

IP = Route(
    "enrich_ip", "GET", "enrich/ip/{ip}", "Address class, Azure service tags and geolocation of an IP address",
    lambda request, _: enricher().ip(_route_value(request, "ip")), IpContext,
    (Parameter("ip", "path", "An IPv4 or IPv6 address", max_length=MAX_IP_LENGTH, formats=("ipv4", "ipv6"),
               example="198.51.100.143"),))
OPERATION = Route(
    "enrich_operation", "GET", "enrich/operation/{*name}", "Catalog description and classification of an operation",
    lambda request, _: enricher().operation(_route_value(request, "name"), _query(request, "source"),
                                                _query(request, "result")),
    OperationContext,
    (Parameter("name", "path", "Operation id; its slashes may be sent as they are or as %2F",
               pattern=f"^{OPERATION_PATTERN}$",
               example="Microsoft.Sql/servers/databases/transparentDataEncryption/write"),
     Parameter("source", "query", "Classify as this source (default: activity, or audit for ids without '/')",
               required=False, choices=SOURCES),
     Parameter("result", "query", "Classify for this result (default: Success)", required=False,
               pattern=f"^{RESULT_PATTERN}$")),
    errors=(400, 404))
RESOURCE = Route(
    "enrich_resource", "GET", "enrich/resource",
    "The live resource from ARM with a plain risk verdict (allow-listed types only)",
    lambda request, _: enricher().resource(_required(request, "id")), ResourceContext,
    (Parameter("id", "query", f"ARM id of an allow-listed type: {', '.join(ALLOWED_TYPE_NAMES)}",
               pattern="^/subscriptions/", max_length=MAX_ID_LENGTH, example=EXAMPLE_RULE_ID),),
    errors=_ARM_ERRORS)
ALERT = Route(
    "enrich_alert", "GET", "enrich/alert", "A Defender for Cloud alert from ARM",
    lambda request, _: enricher().alert(_required(request, "id")), AlertContext,
    (Parameter("id", "query", "Defender for Cloud alert id", pattern="^/subscriptions/", max_length=MAX_ID_LENGTH,
               example=EXAMPLE_ALERT_ID),),
    errors=_ARM_ERRORS)
DISMISS = Route(
    "enrich_alert_dismiss", "POST", "enrich/alert/dismiss",
    "Dismiss a Defender for Cloud alert (only when STORMWATCH_ALLOW_ALERT_DISMISS is true)",
    lambda request, caller: enricher().dismiss(read_body(request, AlertReference).id, by=caller.name), DismissResult,
    body=AlertReference, example={"id": EXAMPLE_ALERT_ID}, errors=(*_ARM_ERRORS, 409, 413, 415), role=RESPONDER)
EVENT = Route(
    "enrich_event", "POST", "enrich/event", "A normalized event with its IP, operation and resource context added",
    lambda request, _: enricher().event(read_body(request, NormalizedEvent)), EnrichedEvent,
    body=NormalizedEvent, example=EXAMPLE_EVENT, errors=(400, 413, 415))


def openapi_document() -> dict[str, Any]:
    return _openapi_document()


OPENAPI = Route("enrich_openapi", "GET", "enrich/openapi.json", "This document",
                lambda _request, _caller: openapi_document(), None, errors=())
ROUTES: tuple[Route, ...] = (IP, OPERATION, RESOURCE, ALERT, DISMISS, EVENT, OPENAPI)


@cache
def _openapi_document() -> dict[str, Any]:
    return openapi.document(ROUTES)



def _error(status: int, message: str, *, allowed_types: list[str] | None = None,
           headers: dict[str, str] | None = None) -> func.HttpResponse:
    body = ErrorBody(error=ErrorDetail(status=status, message=message, allowed_types=allowed_types))
    return json_response(status, body.model_dump(mode="json", exclude_none=True), headers)


def handle(route: Route, request: func.HttpRequest) -> func.HttpResponse:
    """Run one request of `route` to its HTTP answer; unexpected failures are a logged 500."""
    try:
        if len(request.get_body()) > MAX_BODY_BYTES:
            raise InputError(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
        caller = authorize(request, route.role)
        answer = route.run(request, caller)
        document = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
        return json_response(200, document)
    except InputError as error:
        return _error(error.status, error.message, allowed_types=error.allowed_types)
    except ArmError as error:
        logger.info("%s: ARM %s (%s) → %s", route.function, error.arm_status, for_log(error.arm_code), error.status)
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        return _error(error.status, error.message, headers=headers)
    except SettingsError as error:  # our messages name the setting, never its value: no traceback here
        logger.error("%s: app settings unusable: %s", route.function, error)
        return _error(500, "the enrichment settings are unusable; the function's log says which")
    except Exception:
        logger.exception("%s failed", route.function)
        return _error(500, "internal error; the function's log has the details")
