"""The normalized event contract (see README "Normalized schema").

Mappers build plain dicts on the hot path (orjson serialises them directly); this pydantic model is the
contract those dicts satisfy: it documents and validates the shape for tests, the HTTP API and
downstream consumers. Field names are the contract: add fields, never rename them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Source = Literal["activity", "signin", "audit", "defender", "policy", "resource"]
Action = Literal["create_or_update", "delete", "action", "read", "sign_in", "alert", "policy", "other"]
Severity = Literal["Informational", "Warning", "Error", "Critical"]
ActorType = Literal["User", "ServicePrincipal", "ManagedIdentity", "Application", "System"]


class ConditionalAccessResult(BaseModel):
    """One applied conditional access policy of a sign-in."""

    name: str | None = None
    result: str | None = None


class Target(BaseModel):
    """One target of an Entra ID audit operation (user, group, app, role...)."""

    type: str | None = None
    name: str | None = None
    id: str | None = None


class NormalizedEvent(BaseModel):
    """One Azure log record as who / what / when / where. Absent values are null."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(description="Stable id: identical on redelivery of the same record")
    source: Source = Field(description="Which mapper produced the event")
    category: str | None = Field(None, description="The record's real category, e.g. Administrative")
    time: datetime = Field(description="When it happened, ISO-8601 UTC with Z")
    operation: str | None = Field(None, description="The vendor's operation id")
    operation_description: str | None = Field(None, description="From the operation catalog")
    common_event: str = Field("Other", description="Plain-English classification")
    action: Action = "other"
    result: str | None = Field(None, description="Start, Accept, Success, Failure, ...")
    result_reason: str | None = None
    severity: Severity | None = None
    actor: str | None = Field(None, description="Who: UPN, caller or app name")
    actor_id: str | None = None
    actor_app_id: str | None = None
    actor_type: ActorType | None = None
    source_ip: str | None = Field(None, description="A validated IP address, or null")
    user_agent: str | None = None
    tenant_id: str | None = None
    subscription_id: str | None = Field(None, description="Lower-case subscription GUID")
    resource_group: str | None = None
    resource_provider: str | None = None
    resource_type: str | None = Field(None, description="Full type including child types")
    resource_name: str | None = None
    resource_id: str | None = None
    region: str | None = None
    correlation_id: str | None = None
    app: str | None = None
    mfa_method: str | None = None
    auth_requirement: str | None = None
    conditional_access: list[ConditionalAccessResult] | None = None
    risk_level: str | None = None
    risk_state: str | None = None
    risk_event_types: list[str] | None = None
    targets: list[Target] | None = None
    alert_id: str | None = None
    alert_name: str | None = None
    alert_description: str | None = None
    alert_entities: list[dict[str, Any]] | None = None
    policy_assignment: str | None = None
    policy_definition: str | None = None
    policy_effect: str | None = None
    details: dict[str, Any] | None = None
    raw: dict[str, Any] | None = Field(None, description="The original record (configurable)")


class DeadLetter(BaseModel):
    """A body or record that could not be normalized, kept with everything needed to re-drive it."""

    model_config = ConfigDict(extra="forbid")

    reason: str
    partition: str | None = None
    sequence_number: int | None = None
    offset: str | None = None
    enqueued_time: datetime | None = None
    record_index: int | None = Field(default=None, description="Position inside the body; null: whole body")
    original: str = Field(description="The original bytes, base64")
    redriven_at: datetime | None = Field(default=None, description="When it was re-driven through normalize")


FIELD_NAMES: tuple[str, ...] = tuple(NormalizedEvent.model_fields)
