"""Azure Resource Manager client for enrichment: GET resources and one POST action, nothing else.

Paths come only from the resource-id grammar in `shared.enrich.resources` (never from a caller's URL),
so the client refuses anything that is not a plain `/segment/segment` path. It retries 429 and 5xx with
backoff, honouring `Retry-After` (ARM throttles per identity and says how long to wait), and turns every
failure into an `ArmError` whose status is what our HTTP API should answer: 404 stays 404, 403 names the
role the app's identity is missing, throttling and outages become 503/502/504 for the caller to retry.

A bearer token never travels over plain HTTP: `http://` is accepted only for a loopback stand-in of
ARM (tests, local runs), and then no credential is used at all.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NewType
from urllib.parse import urlsplit

import orjson
from azure.core.exceptions import ClientAuthenticationError

from shared.clients.storage import default_credential
from shared.settings import Settings, SettingsError, env_name
from shared.values import is_loopback_host

if TYPE_CHECKING:  # requests is imported by the first client (cold start: the route table imports this module)
    import requests
    from azure.core.credentials import TokenCredential

logger = logging.getLogger("stormwatch.enrich.arm")

ArmPath = NewType("ArmPath", str)
"""A path built by the resource-id grammar: `/subscriptions/.../providers/...`, no query, no escapes."""

# API version per resource provider: the newest stable versions whose response shapes this code reads.
DEFAULT_API_VERSIONS: Mapping[str, str] = {
    "Microsoft.Network": "2023-09-01",
    "Microsoft.KeyVault": "2023-07-01",
    "Microsoft.Storage": "2023-05-01",
    "Microsoft.Authorization": "2022-04-01",
    "Microsoft.Security": "2022-01-01",
}
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_SAFE_PATH = re.compile(r"(/[A-Za-z0-9._()\-]+)+")
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 3600.0  # seconds; a longer Retry-After is passed on as this


class ArmError(Exception):
    """A failed ARM call, with the HTTP status our API answers and a message safe to show a caller."""

    def __init__(self, status: int, message: str, *, arm_status: int | None = None,
                 arm_code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.arm_status = arm_status
        self.arm_code = arm_code
        self.retry_after = retry_after


def api_versions(overrides: Mapping[str, str]) -> dict[str, str]:
    """The defaults with the operator's overrides (`STORMWATCH_ARM_API_VERSIONS`), checked once."""
    merged = dict(DEFAULT_API_VERSIONS)
    for provider, version in overrides.items():
        if provider not in DEFAULT_API_VERSIONS:
            raise ValueError(f"no ARM calls are made to provider {provider!r}; "
                             f"known: {', '.join(DEFAULT_API_VERSIONS)}")
        if not _API_VERSION.fullmatch(version):
            raise ValueError(f"the API version of {provider} is not YYYY-MM-DD[-preview]")
        merged[provider] = version
    return merged


def checked_endpoint(endpoint: str) -> tuple[str, bool]:
    """The base URL without a trailing slash, and whether a token may be sent to it (https only)."""
    parts = urlsplit(endpoint)
    if parts.query or parts.fragment or parts.username or parts.password or not parts.hostname:
        # The value is not repeated: a URL with credentials in it must not reach a log.
        raise ValueError("ARM endpoint must be a plain base URL (no user, password, query or fragment)")
    if parts.scheme == "https":
        return endpoint.rstrip("/"), True
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return endpoint.rstrip("/"), False
    raise ValueError("ARM endpoint must use https (plain http only for a loopback stand-in)")



@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait; waits longer than `max_wait` are handed to the caller instead."""

    attempts: int = 4
    backoff: float = 0.5
    max_wait: float = 20.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return min(self.max_wait, self.backoff * 2.0 ** attempt)


class ArmClient:
    """GET and POST against ARM with the app's identity, retries and status mapping."""

    def __init__(self, endpoint: str, credential: TokenCredential | None,
                 versions: Mapping[str, str] = DEFAULT_API_VERSIONS, *,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.endpoint, token_allowed = checked_endpoint(endpoint)
        if credential is not None and not token_allowed:
            raise ValueError("refusing to send an ARM token over plain http")
        self._credential = credential
        self._scope = f"{self.endpoint}/.default"
        self._versions = dict(versions)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        import requests  # noqa: PLC0415 - cold start

        self._session = requests.Session()

    def api_version(self, provider: str) -> str:
        return self._versions[provider]

    def get(self, path: ArmPath, provider: str, *, role: str = "Reader") -> dict[str, Any]:
        """One resource or list page as JSON; `role` is the one a 403 says the identity lacks."""
        document = self._call("GET", self._url(path, provider), role)
        if document is None:
            raise ArmError(502, f"ARM answered GET {path} without a body")
        return document

    def post(self, path: ArmPath, provider: str, *, role: str) -> dict[str, Any] | None:
        """A resource action (e.g. an alert's `/dismiss`); None when ARM answers 204."""
        return self._call("POST", self._url(path, provider), role)

    def get_pages(self, path: ArmPath, provider: str, *, extra_query: str = "",
                  role: str = "Reader") -> Iterator[dict[str, Any]]:
        """Every page of a list, following `nextLink` only while it stays on the ARM endpoint."""
        url: str | None = self._url(path, provider) + extra_query
        while url is not None:
            page = self._call("GET", url, role)
            if page is None:
                raise ArmError(502, f"ARM answered GET {path} without a body")
            yield page
            url = self._next_link(page.get("nextLink"))

    def _next_link(self, link: object) -> str | None:
        if not link:
            return None
        if not isinstance(link, str) or not link.startswith(self.endpoint + "/"):
            raise ArmError(502, "ARM returned a nextLink outside the ARM endpoint; not followed")
        return link

    def _url(self, path: ArmPath, provider: str) -> str:
        if not _SAFE_PATH.fullmatch(path) or "/../" in f"{path}/" or "/./" in f"{path}/":
            raise ValueError(f"not an ARM path from the resource grammar: {path!r}")
        return f"{self.endpoint}{path}?api-version={self._versions[provider]}"

    def _call(self, method: str, url: str, role: str) -> dict[str, Any] | None:
        path = urlsplit(url).path
        for attempt in range(self._retry.attempts):
            response = self._send(method, url, path, last=attempt + 1 == self._retry.attempts)
            if response is None:  # a timeout or connection failure worth another attempt
                self._sleep(self._retry.delay(attempt, None))
                continue
            if response.status_code not in _RETRIED_STATUSES:
                return _result(response, method, path, role)
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            wait = self._retry.delay(attempt, retry_after)
            if attempt + 1 == self._retry.attempts or wait > self._retry.max_wait:
                raise _unavailable(response, method, path, attempt + 1, retry_after)
            logger.warning("ARM %s %s answered %s; retry %d in %.1f s", method, path,
                           response.status_code, attempt + 1, wait)
            self._sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def _send(self, method: str, url: str, path: str, *, last: bool) -> requests.Response | None:
        import requests  # noqa: PLC0415 - imported by __init__ already

        try:
            return self._session.request(method, url, headers=self._headers(),
                                         timeout=(self._retry.connect_timeout, self._retry.read_timeout))
        except requests.Timeout as error:
            logger.warning("ARM %s %s timed out", method, path)
            if last:
                raise ArmError(504, f"ARM did not answer {method} {path} in time") from error
        except requests.ConnectionError as error:
            logger.warning("ARM %s %s: connection failed", method, path)
            if last:
                raise ArmError(502, f"ARM could not be reached for {method} {path}") from error
        return None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "stormwatch-enrich"}
        if self._credential is not None:
            try:
                token = self._credential.get_token(self._scope).token
            except ClientAuthenticationError as error:
                # The credential's own message lists every source it tried; it holds no secret,
                # but it is long and about our deployment, so the caller gets a short version.
                logger.error("no Azure credential for ARM: %s", type(error).__name__)
                raise ArmError(503, "the app has no usable Azure identity for ARM (managed identity "
                                    "or a developer login)") from error
            headers["Authorization"] = f"Bearer {token}"
        return headers


def _result(response: requests.Response, method: str, path: str, role: str) -> dict[str, Any] | None:
    status = response.status_code
    if status == 204 or (200 <= status < 300 and not response.content):
        return None
    if 200 <= status < 300:
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError as error:
            raise ArmError(502, f"ARM answered {method} {path} with invalid JSON",
                           arm_status=status) from error
        if not isinstance(document, dict):
            raise ArmError(502, f"ARM answered {method} {path} with JSON that is not an object",
                           arm_status=status)
        return document
    code = _error_code(response)
    logger.info("ARM %s %s answered %s (%s)", method, path, status, code)
    if status == 404:
        raise ArmError(404, f"not found in Azure Resource Manager: {path}", arm_status=status, arm_code=code)
    if status == 403:
        raise ArmError(403, f"the app's identity may not {method} {path}: assign it the {role} role on "
                            "the subscription (or on this resource's scope)", arm_status=status, arm_code=code)
    if status == 401:
        raise ArmError(502, "ARM rejected the app's credentials (401): check the identity's tenant",
                       arm_status=status, arm_code=code)
    if status in (400, 409):
        raise ArmError(status, f"ARM refused {method} {path}: {code or 'no error code'}",
                       arm_status=status, arm_code=code)
    raise ArmError(502, f"ARM answered {method} {path} with {status}", arm_status=status, arm_code=code)


def _unavailable(response: requests.Response, method: str, path: str, attempts: int,
                 retry_after: float | None) -> ArmError:
    status = response.status_code
    wait = int(retry_after + 0.999) if retry_after is not None else None
    if status == 429:
        return ArmError(503, f"ARM is throttling the app's calls ({method} {path}); retry later",
                        arm_status=status, arm_code=_error_code(response), retry_after=wait or 30)
    return ArmError(502, f"ARM answered {method} {path} with {status} after {attempts} attempt(s)",
                    arm_status=status, arm_code=_error_code(response), retry_after=wait)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from `Retry-After`: delta seconds or an HTTP date, capped at an hour (a caller is
    told no longer than that); None when absent or garbage (the ordinary backoff applies)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(MAX_RETRY_AFTER, float(value))
    try:
        moment = parsedate_to_datetime(value)
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _error_code(response: requests.Response) -> str | None:
    """ARM's `error.code` (e.g. AuthorizationFailed). Its message is not passed on: it can name the
    identity's object id and scopes, which is ours to log, not a caller's to read."""
    try:
        document = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code[:100] if isinstance(code, str) else None


def arm_client(settings: Settings) -> ArmClient:
    """The client the settings describe: the app's identity for https, none for a loopback stand-in."""
    try:
        endpoint, token_allowed = checked_endpoint(settings.arm_endpoint)
        return ArmClient(endpoint, default_credential() if token_allowed else None,
                         api_versions(settings.arm_api_versions))
    except ValueError as error:
        raise SettingsError(f"{env_name('arm_endpoint')} / {env_name('arm_api_versions')}: {error}") from error
