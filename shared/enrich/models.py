"""Contracts of the enrichment HTTP API: request bodies and answers. The OpenAPI document is built
from these models, so what the API validates, answers and documents cannot drift apart."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.enrich.resource_ids import MAX_ID_LENGTH, ResourceKind
from shared.normalized_event import NormalizedEvent

Risk = Literal["high", "medium", "low", "none"]
AddressClass = Literal["public", "private", "shared", "loopback", "link_local", "multicast", "documentation",
                       "unspecified", "reserved"]


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorDetail(Contract):
    status: int
    message: str
    allowed_types: list[str] | None = Field(None, description="The resource allow-list (resource routes)")


class ErrorBody(Contract):
    """Every non-2xx answer."""

    error: ErrorDetail


class ServiceTagMatch(Contract):
    name: str = Field(description="e.g. AzureCloud.westeurope")
    region: str | None = None
    system_service: str | None = None
    prefix: str = Field(description="The tag's prefix that contains the address")


class Geolocation(Contract):
    country_code: str | None = None
    country: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    asn: int | None = None
    as_organization: str | None = None


class IpContext(Contract):
    ip: str = Field(description="The address in canonical form")
    version: Literal[4, 6]
    address_class: AddressClass
    is_global: bool = Field(description="Routable on the public internet")
    is_azure: bool | None = Field(description="In an Azure service tag; null when no tag data is available")
    service_tags: list[ServiceTagMatch]
    service_tags_version: str | None = Field(description="Where the tag data came from and its change number")
    geolocation: Geolocation | None = Field(description="From the configured MaxMind-format database")
    notes: list[str] = Field(default_factory=list, description="Why a part is missing")


class OperationContext(Contract):
    operation: str = Field(description="The operation id as the catalog keys it (upper case)")
    display_name: str | None
    description: str | None
    provider: str | None = Field(description="Resource provider of an ARM operation, e.g. MICROSOFT.SQL")
    action: str = Field(description="The verb, as in normalized events")
    common_event: str = Field(description="Classification for the given source and result")


class SecurityRuleView(Contract):
    name: str
    priority: int | None
    direction: str | None
    access: str | None
    protocol: str | None
    source_address_prefixes: list[str]
    source_port_ranges: list[str]
    destination_address_prefixes: list[str]
    destination_port_ranges: list[str]
    description: str | None = None
    verdict: str = Field(description='Plain words, e.g. "allows inbound TCP 9753 from any source"')
    risk: Risk


class KeyVaultView(Contract):
    vault_uri: str | None
    public_network_access: str | None
    network_default_action: str | None
    ip_rules: list[str]
    soft_delete: bool | None
    purge_protection: bool | None
    rbac_authorization: bool | None
    access_policies: list[dict[str, Any]] = Field(description="Object ids and their permissions")


class StorageAccountView(Contract):
    kind: str | None
    sku: str | None
    public_network_access: str | None
    network_default_action: str | None
    allow_blob_public_access: bool | None
    allow_shared_key_access: bool | None
    https_only: bool | None
    minimum_tls_version: str | None


class RoleAssignmentView(Contract):
    role_definition_id: str | None
    role_name: str | None = Field(description="Looked up from the role definition; null if unreadable")
    principal_id: str | None
    principal_type: str | None
    scope: str | None
    condition: str | None
    created_on: str | None
    created_by: str | None
    privileged: bool


class ResourceContext(Contract):
    id: str
    kind: ResourceKind
    type: str
    name: str
    location: str | None
    verdict: str
    risk: Risk
    fetched_at: datetime = Field(description="When ARM was read (older than now when served from cache)")
    rules: list[SecurityRuleView] | None = Field(None, description="NSG: its custom rules; rule: itself")
    key_vault: KeyVaultView | None = None
    storage_account: StorageAccountView | None = None
    role_assignment: RoleAssignmentView | None = None


class AlertContext(Contract):
    id: str
    name: str
    display_name: str | None
    alert_type: str | None
    severity: str | None
    status: str | None
    intent: str | None
    product_name: str | None
    description: str | None
    compromised_entity: str | None
    start_time: str | None
    end_time: str | None
    time_generated: str | None
    resource_ids: list[str]
    remediation_steps: list[str]
    entities: list[dict[str, Any]]
    extended_properties: dict[str, Any]
    techniques: list[str]
    alert_uri: str | None
    fetched_at: datetime


class AlertReference(Contract):
    """Body of `POST alert/dismiss`."""

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="The Defender for Cloud alert id")


class DismissResult(Contract):
    id: str
    status: Literal["Dismissed"]
    dismissed_by: str  # the Entra ID caller, or "function key"


class EnrichmentProblem(Contract):
    part: Literal["ip", "operation", "resource"]
    status: int
    message: str


class EventContext(Contract):
    ip: IpContext | None
    operation: OperationContext | None
    resource: ResourceContext | None
    problems: list[EnrichmentProblem] = Field(description="Parts that could not be added, and why")


class EnrichedEvent(NormalizedEvent):
    """The normalized event that came in, with its context added under `enrichment`."""

    enrichment: EventContext
