"""`routes.yaml` in the rules folder: which alerts go where. The models, the loader and the matching.

The file is data from an operator, so loading never raises: a broken file or route is reported (file,
line, problem) and the routes that do load still deliver. URLs that carry a token (a Teams Workflows
`sig=`, a Slack path secret) are never written in the file: a route names the app setting that holds
the URL (`url_setting`), which may be a Key Vault reference.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.detect.alerts import Alert
from shared.detect.rules.errors import LoadError
from shared.detect.rules.loader import ROUTES_FILE, FileError, read_yaml, validation_report
from shared.detect.rules.model import Severity
from shared.values import is_loopback_host

SEVERITY_ORDER: tuple[Severity, ...] = ("informational", "low", "medium", "high", "critical")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"  # also a Table RowKey: no / \ # ?
_SETTING = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_ROUTES = 100
# Hosts whose webhook URLs are themselves the secret (a path token or a `sig=`): never in the file.
_SECRET_URL_HOSTS = ("hooks.slack.com", ".logic.azure.com", ".powerautomate.com", ".powerplatform.com",
                     ".webhook.office.com", "outlook.office.com")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Model):
    """Which alerts: every criterion given must hold; within a list, any entry may."""

    min_severity: Severity = "informational"
    rules: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, description="Rule ids or globs (azure-*); empty: any rule")
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, description="ATT&CK tags (attack.t1078, attack.persistence); empty: any")

    def selects(self, alert: Alert) -> bool:
        if SEVERITY_ORDER.index(alert.severity) < SEVERITY_ORDER.index(self.min_severity):
            return False
        if self.rules and not any(fnmatch.fnmatchcase(alert.rule_id, pattern) for pattern in self.rules):
            return False
        tags = {tag.lower() for tag in alert.tags}
        return not self.tags or any(tag.lower() in tags for tag in self.tags)


def check_url(url: str) -> str:
    """HTTPS only (plain HTTP to a loopback address for local receivers); no user, password, query or
    fragment in a URL written in the file: those carry tokens, which belong in an app setting."""
    parts = urlsplit(url)
    loopback = is_loopback_host(parts.hostname)
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError("must be an https:// URL (http:// only to 127.0.0.1 or localhost)")
    if not parts.hostname:
        raise ValueError("has no host")
    return url



class Webhook(_Model):
    type: Literal["webhook"]
    format: Literal["json", "teams", "slack"] = "json"
    url: str | None = Field(None, max_length=2048, description="Only for URLs without a token in them")
    url_setting: str | None = Field(None, pattern=_SETTING, description="App setting holding the URL")
    secret_setting: str | None = Field(None, pattern=_SETTING,
                                       description="App setting holding the HMAC-SHA256 signing secret")
    timeout_seconds: float = Field(10, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _no_token_in_file(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(check_url(url))
        host = (parts.hostname or "").lower()
        secret_host = any(host == known.lstrip(".") or (known.startswith(".") and host.endswith(known))
                          for known in _SECRET_URL_HOSTS)
        if parts.username or parts.password or parts.query or parts.fragment or secret_host:
            raise ValueError("carries credentials, a query string or a token (Slack, Teams Workflows): put the "
                             "URL in an app setting and name it with url_setting")
        return url

    @model_validator(mode="after")
    def _one_url(self) -> Webhook:
        if (self.url is None) == (self.url_setting is None):
            raise ValueError("give exactly one of url and url_setting")
        return self


class LogAnalytics(_Model):
    """The Logs Ingestion API: a data collection endpoint, a rule's immutable id and its stream."""

    type: Literal["log_analytics"]
    endpoint_setting: str = Field("STORMWATCH_LOGS_ENDPOINT", pattern=_SETTING,
                                  description="App setting with the data collection endpoint's ingestion URL")
    rule_id_setting: str = Field("STORMWATCH_LOGS_RULE_ID", pattern=_SETTING,
                                 description="App setting with the data collection rule's immutable id")
    stream: str = Field("Custom-StormwatchAlerts_CL", pattern=r"^Custom-[A-Za-z0-9_]{1,100}$")
    timeout_seconds: float = Field(30, gt=0, le=120)


Destination = Annotated[Webhook | LogAnalytics, Field(discriminator="type")]


class Route(_Model):
    name: str = Field(pattern=_NAME)
    match: Match = Field(default_factory=Match)
    destination: Destination
    max_attempts: int = Field(8, ge=1, le=50, description="Attempts before the delivery is marked failed")
    backoff_seconds: float = Field(30, ge=0, le=3600, description="First retry delay; doubled per attempt")
    max_backoff_seconds: float = Field(3600, ge=0, le=86_400)


class RoutesFile(_Model):
    routes: list[Route] = Field(default_factory=list, max_length=MAX_ROUTES)


@dataclass
class RouteTable:
    """The routes that loaded, and one error per problem (none when the file is absent: no routes)."""

    routes: list[Route] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    path: Path | None = None

    def matching(self, alert: Alert) -> list[Route]:
        return [route for route in self.routes if route.match.selects(alert)]

    def named(self, name: str) -> Route | None:
        return next((route for route in self.routes if route.name == name), None)


def load_routes(rules_dir: Path) -> RouteTable:
    """`rules_dir/routes.yaml`, each route validated on its own so one bad route keeps the others."""
    path = rules_dir / ROUTES_FILE
    table = RouteTable(path=path)
    if not path.is_file():
        return table
    try:
        data, node = read_yaml(path)
    except FileError as error:
        table.errors.append(error.report)
        return table
    except Exception as error:  # whatever the file does, the function goes on and says so
        table.errors.append(LoadError(path, None, f"cannot load: {type(error).__name__}: {error}"[:500]))
        return table
    if not isinstance(data, Mapping) or not isinstance(data.get("routes"), list):
        table.errors.append(LoadError(path, 1, "expected a mapping with a 'routes' list"))
        return table
    unknown = sorted(str(key) for key in data if key != "routes")
    if unknown:
        table.errors.append(LoadError(path, 1, f"unknown keys: {', '.join(unknown)}"))
    entries: Sequence[object] = data["routes"]
    if len(entries) > MAX_ROUTES:
        table.errors.append(LoadError(path, None, f"more than {MAX_ROUTES} routes; the rest are ignored"))
    for index, entry in enumerate(entries[:MAX_ROUTES]):
        try:
            route = Route.model_validate(entry)
        except ValidationError as error:
            table.errors.append(validation_report(path, node, error, ("routes", index)))
            continue
        if table.named(route.name) is not None:
            table.errors.append(LoadError(path, None, f"routes.{index}: the name {route.name!r} is used twice"))
            continue
        table.routes.append(route)
    return table

