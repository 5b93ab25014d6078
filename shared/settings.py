"""Configuration from app settings (environment variables), validated in one place.

Every setting the code reads is declared here, so `infra/` can provision exactly this list and a test
can check that it does. Binding expressions (`%NAME%`) in the function packages refer to the same names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Names of app settings resolved by the Functions host inside binding declarations (`%NAME%`).
RAW_HUB = "STORMWATCH_RAW_HUB"
NORMALIZE_CONSUMER_GROUP = "STORMWATCH_NORMALIZE_CONSUMER_GROUP"
NORMALIZED_HUB = "STORMWATCH_NORMALIZED_HUB"
DETECT_CONSUMER_GROUP = "STORMWATCH_DETECT_CONSUMER_GROUP"
# Connection *prefixes* for identity-based Event Hubs connections: the host reads
# `<prefix>__fullyQualifiedNamespace` (managed identity) or `<prefix>` (a connection string, local only).
RAW_CONNECTION = "RawEventHubConnection"
FANOUT_CONNECTION = "EventHubConnection"
# delivery_fn's events_export: its stream (read when the functions are indexed) and its consumer group.
EVENTS_STREAM = "STORMWATCH_EVENTS_STREAM"
EVENTS_CONSUMER_GROUP = "STORMWATCH_EVENTS_CONSUMER_GROUP"
# How the HTTP routes authenticate: `keys` (function keys) or `entra` (App Service Authentication).
HTTP_AUTH = "STORMWATCH_HTTP_AUTH"

_ENV_NAMES: dict[str, str] = {
    "raw_hub": RAW_HUB,
    "normalize_consumer_group": NORMALIZE_CONSUMER_GROUP,
    "normalized_hub": NORMALIZED_HUB,
    "detect_consumer_group": DETECT_CONSUMER_GROUP,
    "alerts_hub": "STORMWATCH_ALERTS_HUB",
    "routes": "STORMWATCH_ROUTES",
    "include_raw": "STORMWATCH_INCLUDE_RAW",
    "publisher": "STORMWATCH_PUBLISHER",
    "eventhub_namespace": f"{FANOUT_CONNECTION}__fullyQualifiedNamespace",
    "eventhub_connection_string": FANOUT_CONNECTION,
    "storage_connection_string": "STORMWATCH_STORAGE_CONNECTION_STRING",
    "blob_endpoint": "STORMWATCH_BLOB_ENDPOINT",
    "table_endpoint": "STORMWATCH_TABLE_ENDPOINT",
    "deadletter_container": "STORMWATCH_DEADLETTER_CONTAINER",
    # detect_fn
    "rules_dir": "STORMWATCH_RULES_DIR",
    "rule_statuses": "STORMWATCH_RULE_STATUSES",
    "unknown_subscriptions": "STORMWATCH_UNKNOWN_SUBSCRIPTIONS",
    "rules_container": "STORMWATCH_RULES_CONTAINER",
    "rules_refresh_seconds": "STORMWATCH_RULES_REFRESH_SECONDS",
    "state_table": "STORMWATCH_STATE_TABLE",
    "alerts_table": "STORMWATCH_ALERTS_TABLE",
    "inventory_table": "STORMWATCH_INVENTORY_TABLE",
    # delivery_fn (routes.yaml names further settings per route: webhook URLs and secrets, the DCR)
    "deliveries_table": "STORMWATCH_DELIVERIES_TABLE",
    # delivery_fn's events_export (normalized events into Log Analytics), registered when the stream is set
    "events_stream": EVENTS_STREAM,
    "events_consumer_group": EVENTS_CONSUMER_GROUP,
    # enrich_fn
    "arm_endpoint": "STORMWATCH_ARM_ENDPOINT",
    "subscription_id": "STORMWATCH_SUBSCRIPTION_ID",
    "enrich_cache_table": "STORMWATCH_ENRICH_CACHE_TABLE",
    "allow_alert_dismiss": "STORMWATCH_ALLOW_ALERT_DISMISS",
    "geoip_database": "STORMWATCH_GEOIP_DATABASE",
    "service_tags_file": "STORMWATCH_SERVICE_TAGS_FILE",
    "service_tags_region": "STORMWATCH_SERVICE_TAGS_REGION",
    "arm_api_versions": "STORMWATCH_ARM_API_VERSIONS",
    # HTTP routes (enrich_fn, inventory_fn): read when the functions are indexed, see `shared.caller`
    "http_auth": HTTP_AUTH,
}


class Settings(BaseModel):
    """Validated app settings. Defaults suit a local run against Azurite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_hub: str = "raw"
    normalize_consumer_group: str = "normalize"
    normalized_hub: str = "normalized"
    detect_consumer_group: str = "detect"
    alerts_hub: str = "alerts"
    # Extra hubs per source, e.g. {"signin": ["identity"]}: sign-ins also go to the identity team's hub.
    routes: dict[str, list[str]] = Field(default_factory=dict)
    include_raw: bool = True
    # "eventhub" in Azure; "memory" keeps published events in process (local runs, tests).
    publisher: str = "memory"
    eventhub_namespace: str | None = None
    # Local only (Event Hubs emulator): in Azure the namespace above is used with the managed identity.
    eventhub_connection_string: str | None = None
    # Local only (Azurite): in Azure the endpoints below are used with the managed identity.
    storage_connection_string: str | None = None
    blob_endpoint: str | None = None
    table_endpoint: str | None = None
    deadletter_container: str = "deadletters"
    # detect_fn: rules folder (default: the `rules/` folder shipped with the app) and its tables.
    rules_dir: str | None = None
    # Which Sigma `status` values run (comma-separated in the app setting); rules without a status always do.
    rule_statuses: list[str] = Field(default_factory=lambda: ["stable", "test"])
    # The environment a subscription the catalog does not list counts as (`none`: no environment), so a fresh
    # deployment's production-scoped rules see its real subscriptions before anyone edits the catalog.
    unknown_subscriptions: Literal["production", "staging", "development", "none"] = "production"
    # A deployment's own rules and lists, laid over `rules_dir` and re-checked this often (README "Writing rules").
    rules_container: str = "rules"
    rules_refresh_seconds: int = Field(default=120, ge=10, le=86_400)
    state_table: str = "detectionstate"
    alerts_table: str = "alerts"
    # detect_fn keeps the per-subscription, per-day inventory here; inventory_fn reads it.
    inventory_table: str = "inventory"
    # delivery_fn's outbox: one row per (alert, route).
    deliveries_table: str = "deliveries"
    # Normalized events into Log Analytics: the DCR stream (unset: not exported) and the consumer group.
    events_stream: str | None = None
    events_consumer_group: str = "loganalytics"
    # enrich_fn: ARM base URL (sovereign clouds and the local fake differ), cache, optional actions.
    arm_endpoint: str = "https://management.azure.com"
    subscription_id: str | None = None
    enrich_cache_table: str = "enrichcache"
    allow_alert_dismiss: bool = False
    http_auth: Literal["keys", "entra"] = "keys"
    geoip_database: str | None = None
    service_tags_file: str | None = None
    service_tags_region: str = "westeurope"
    # Per resource provider, e.g. {"Microsoft.Network": "2024-05-01"}; defaults in shared/clients/arm.py.
    arm_api_versions: dict[str, str] = Field(default_factory=dict)

    @field_validator("routes", "arm_api_versions", mode="before")
    @classmethod
    def _parse_routes(cls, value: object) -> object:
        if isinstance(value, str):
            return orjson.loads(value) if value.strip() else {}
        return value

    @field_validator("rule_statuses", mode="before")
    @classmethod
    def _split_statuses(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("publisher")
    @classmethod
    def _known_publisher(cls, value: str) -> str:
        if value not in ("eventhub", "memory"):
            raise ValueError("must be 'eventhub' or 'memory'")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read every declared setting that is present; raise SettingsError naming the bad one."""
        values = {field: env[name] for field, name in _ENV_NAMES.items() if env.get(name, "") != ""}
        try:
            return cls.model_validate(values)
        except (ValidationError, orjson.JSONDecodeError) as error:
            raise SettingsError(f"invalid app settings: {error}") from error


class SettingsError(ValueError):
    """An app setting is present but unusable."""


def env_name(field: str) -> str:
    """The app setting name behind a Settings field (for messages and the infra check)."""
    return _ENV_NAMES[field]


def declared_env_names() -> list[str]:
    """Every app setting name the code reads, including those only the host resolves."""
    return sorted(set(_ENV_NAMES.values()) | {RAW_HUB, NORMALIZE_CONSUMER_GROUP, NORMALIZED_HUB,
                                              DETECT_CONSUMER_GROUP})


# Settings that only make sense on a developer's machine (Azurite); never provisioned in Azure.
LOCAL_ONLY = frozenset({"STORMWATCH_STORAGE_CONNECTION_STRING", FANOUT_CONNECTION})
# Settings an operator may add in Azure but that have safe defaults or switch optional features on.
OPTIONAL_IN_AZURE = frozenset({
    "STORMWATCH_ROUTES", "STORMWATCH_INCLUDE_RAW", "STORMWATCH_RULES_DIR", "STORMWATCH_RULE_STATUSES",
    "STORMWATCH_UNKNOWN_SUBSCRIPTIONS", "STORMWATCH_RULES_REFRESH_SECONDS",
    "STORMWATCH_GEOIP_DATABASE",
    "STORMWATCH_SERVICE_TAGS_FILE", "STORMWATCH_ALLOW_ALERT_DISMISS", "STORMWATCH_ARM_API_VERSIONS",
    "STORMWATCH_DELIVERIES_TABLE", EVENTS_STREAM, EVENTS_CONSUMER_GROUP,
})
# Identity-based connections the Functions host itself reads (not through Settings).
HOST_CONNECTIONS = (
    f"{RAW_CONNECTION}__fullyQualifiedNamespace",
    f"{FANOUT_CONNECTION}__fullyQualifiedNamespace",
    "AzureWebJobsStorage__accountName",
)


def required_in_azure() -> list[str]:
    """App settings a deployment must provision for the functions to run."""
    names = set(declared_env_names()) | set(HOST_CONNECTIONS)
    return sorted(names - LOCAL_ONLY - OPTIONAL_IN_AZURE)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once (the Functions host restarts the worker on change)."""
    return Settings.from_env(os.environ)
