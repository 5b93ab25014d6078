"""Who calls an HTTP route, and whether they may: the function-key holder, or an Entra ID user or app.

With `STORMWATCH_HTTP_AUTH=entra` the routes are anonymous to the Functions host and App Service
Authentication stands in front of them: it signs browsers in, validates bearer tokens, and hands the app
the caller's claims in `X-MS-CLIENT-PRINCIPAL` (a header callers cannot set themselves). The app then
checks the caller's app roles: readers may look, responders may also act (acknowledge, close, dismiss).
A request without that header is refused (401), so a deployment whose sign-in is missing fails closed.
With `keys` (the default, and every local run) the function key is the only check and its holder may do
everything, as before.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import azure.functions as func
import orjson

from shared.http_errors import InputError
from shared.settings import HTTP_AUTH

Role = Literal["Stormwatch.Reader", "Stormwatch.Responder"]
READER: Final[Role] = "Stormwatch.Reader"
RESPONDER: Final[Role] = "Stormwatch.Responder"
PRINCIPAL_HEADER = "x-ms-client-principal"
MAX_PRINCIPAL_CHARS = 32 * 1024
# Claim types App Service puts in the principal, in the order a caller's name is taken from.
_NAME_CLAIMS = ("preferred_username", "upn", "name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
                "appid", "azp")
_OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")


@dataclass(frozen=True)
class Caller:
    """The identity a request acts as; `name` is what alerts and log lines record."""

    name: str
    object_id: str | None
    roles: frozenset[str]

    def may(self, role: Role) -> bool:
        return role in self.roles or (role == READER and RESPONDER in self.roles)


KEY_HOLDER = Caller("function key", None, frozenset({READER, RESPONDER}))


def entra_mode(environ: Mapping[str, str] = os.environ) -> bool:
    """Read where the bindings are declared, before settings are loaded: the host indexes once per worker."""
    return environ.get(HTTP_AUTH, "keys").strip().lower() == "entra"


def route_auth_level(environ: Mapping[str, str] = os.environ) -> func.AuthLevel:
    """Function keys unless App Service Authentication guards the routes (then a key would be a second lock)."""
    return func.AuthLevel.ANONYMOUS if entra_mode(environ) else func.AuthLevel.FUNCTION


def principal_of(header: str | None) -> Caller | None:
    """The caller App Service Authentication describes, or None when the header is absent or unusable."""
    if not header or len(header) > MAX_PRINCIPAL_CHARS:
        return None
    try:
        document: Any = orjson.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        return None
    claims = document.get("claims") if isinstance(document, dict) else None
    if not isinstance(claims, list):
        return None
    role_type = document.get("role_typ") if isinstance(document.get("role_typ"), str) else "roles"
    values: dict[str, list[str]] = {}
    for claim in claims:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            values.setdefault(claim["typ"], []).append(claim["val"])
    name = next((values[kind][0] for kind in _NAME_CLAIMS if kind in values), None)
    object_id = next((values[kind][0] for kind in _OBJECT_ID_CLAIMS if kind in values), None)
    if name is None and object_id is None:
        return None
    roles = frozenset(values.get(role_type, []) + values.get("roles", []))
    return Caller(name=name or object_id or "", object_id=object_id, roles=roles)


def authorize(request: func.HttpRequest, role: Role, environ: Mapping[str, str] = os.environ) -> Caller:
    """The caller, if they hold `role`; 401 without a signed-in caller, 403 without the role."""
    if not entra_mode(environ):
        return KEY_HOLDER
    caller = principal_of(request.headers.get(PRINCIPAL_HEADER))
    if caller is None:
        raise InputError("sign in with Entra ID: no authenticated caller reached the app", status=401)
    if not caller.may(role):
        raise InputError(f"{caller.name} lacks the app role {role}", status=403)
    return caller
