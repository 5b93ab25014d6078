"""Who may call the HTTP routes: App Service Authentication's caller and its app roles, or a function key."""

from __future__ import annotations

import base64
from typing import Any

import azure.functions as func
import orjson
import pytest

from shared.caller import KEY_HOLDER, PRINCIPAL_HEADER, READER, RESPONDER, authorize, principal_of, route_auth_level
from shared.http_errors import InputError

ENTRA = {"STORMWATCH_HTTP_AUTH": "entra"}


def principal(*claims: tuple[str, str], role_type: str = "roles") -> str:
    """The header App Service Authentication sends: base64 of the claims document."""
    document: dict[str, Any] = {"auth_typ": "aad", "name_typ": "name", "role_typ": role_type,
                                "claims": [{"typ": kind, "val": value} for kind, value in claims]}
    return base64.b64encode(orjson.dumps(document)).decode()


OBJECT_ID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
ERIN = principal(("preferred_username", "erin@contoso.example"), (OBJECT_ID, "0e1f0000-0000-4000-8000-00000000e1e1"),
                 ("roles", RESPONDER))
READER_ONLY = principal(("name", "Frank Reader"), ("roles", READER))
AUTOMATION = principal(("appid", "5a0a0000-0000-4000-8000-000000005a0a"), ("roles", READER))


def request(header: str | None = None) -> func.HttpRequest:
    return func.HttpRequest("GET", "https://app/api/inventory", headers={PRINCIPAL_HEADER: header} if header else {},
                            body=b"")


def test_a_signed_in_caller_is_read_from_the_platform_header() -> None:
    erin = principal_of(ERIN)
    assert erin is not None
    assert (erin.name, erin.object_id) == ("erin@contoso.example", "0e1f0000-0000-4000-8000-00000000e1e1")
    assert erin.may(RESPONDER) and erin.may(READER)  # responders may also read
    frank = principal_of(READER_ONLY)
    assert frank is not None and frank.may(READER) and not frank.may(RESPONDER)
    app = principal_of(AUTOMATION)
    assert app is not None and app.name == "5a0a0000-0000-4000-8000-000000005a0a"  # a daemon app: its client id


@pytest.mark.parametrize("header", [
    "", "not base64!", base64.b64encode(b"not json").decode(), base64.b64encode(b"[1, 2]").decode(),
    base64.b64encode(b'{"claims": "x"}').decode(), principal(("roles", READER)),  # roles but nobody
    "A" * 40_000,
])
def test_an_unusable_principal_is_no_caller(header: str) -> None:
    assert principal_of(header) is None


def test_entra_mode_refuses_requests_without_a_caller_or_the_role() -> None:
    with pytest.raises(InputError) as missing:
        authorize(request(), READER, ENTRA)
    assert missing.value.status == 401
    with pytest.raises(InputError) as forbidden:
        authorize(request(READER_ONLY), RESPONDER, ENTRA)
    assert forbidden.value.status == 403 and "Frank Reader" in forbidden.value.message
    assert authorize(request(ERIN), RESPONDER, ENTRA).name == "erin@contoso.example"


def test_with_function_keys_the_key_is_the_only_check() -> None:
    assert authorize(request(), RESPONDER, {}) is KEY_HOLDER
    assert authorize(request(READER_ONLY), RESPONDER, {"STORMWATCH_HTTP_AUTH": "keys"}) is KEY_HOLDER


def test_routes_take_keys_unless_app_service_authentication_guards_them() -> None:
    assert route_auth_level({}) == func.AuthLevel.FUNCTION
    assert route_auth_level({"STORMWATCH_HTTP_AUTH": "keys"}) == func.AuthLevel.FUNCTION
    assert route_auth_level(ENTRA) == func.AuthLevel.ANONYMOUS
