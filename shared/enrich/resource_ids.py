"""The grammar of the ids the API accepts: one strict pattern per allow-listed type.

A caller's id is never passed to ARM as it came: it must match one pattern whole, and the path sent to
ARM is rebuilt from the matched parts with canonical casing. Dot segments, escapes (`%`), query or
fragment characters, backslashes, whitespace and extra segments never match, so an id cannot reach a
different ARM path or host than the type it claims.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from shared.clients.arm import ArmPath
from shared.http_errors import InputError
from shared.normalize.mappers.resource_id import parse_resource_id

MAX_ID_LENGTH = 1024
ResourceKind = Literal["network_security_group", "security_rule", "key_vault", "storage_account",
                       "role_assignment"]

_FLAGS = re.IGNORECASE | re.ASCII
_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_GROUP_NAME = r"[-\w.()]{0,89}[-\w()]"  # 1-90 characters, no trailing period
_NETWORK_NAME = r"[a-z0-9](?:[\w.-]{0,78}\w)?"  # NSG and rule names: 1-80 characters
_VAULT_NAME = r"[a-z][a-z0-9-]{1,22}[a-z0-9]"
_STORAGE_NAME = r"[a-z0-9]{3,24}"
_SUBSCRIPTION = rf"/subscriptions/(?P<subscription>{_GUID})"
_RESOURCE_GROUP = rf"{_SUBSCRIPTION}/resourceGroups/(?P<group>{_GROUP_NAME})"
# Role assignments live at a scope: the subscription, a resource group or an allow-listed resource.
_SCOPE = (rf"/subscriptions/{_GUID}(?:/resourceGroups/(?:{_GROUP_NAME})(?:/providers/Microsoft\.(?:"
          rf"Network/networkSecurityGroups/{_NETWORK_NAME}|KeyVault/vaults/{_VAULT_NAME}|"
          rf"Storage/storageAccounts/{_STORAGE_NAME}))?)?")
_FORBIDDEN = re.compile(r"\.\.|[%?#\\\s\x00-\x1f\x7f]|//|/$")


@dataclass(frozen=True)
class AllowedType:
    """One allow-listed resource type: its id pattern and the canonical ARM path it is rebuilt into."""

    kind: ResourceKind
    arm_type: str
    provider: str
    pattern: re.Pattern[str]
    template: str


def _grouped(kind: ResourceKind, arm_type: str, *name_patterns: str) -> AllowedType:
    """A type that lives in a resource group: `.../providers/<namespace>/<type>/<name>[/<child>/<name>]`."""
    provider, *types = arm_type.split("/")
    pattern = template = ""
    for depth, (type_name, name_pattern) in enumerate(zip(types, name_patterns, strict=True)):
        part = "name" if depth == len(types) - 1 else f"parent{depth}"
        pattern += rf"/{re.escape(type_name)}/(?P<{part}>{name_pattern})"
        template += f"/{type_name}/{{{part}}}"
    return AllowedType(kind, arm_type, provider,
                       re.compile(rf"{_RESOURCE_GROUP}/providers/{re.escape(provider)}{pattern}", _FLAGS),
                       f"/subscriptions/{{subscription}}/resourceGroups/{{group}}/providers/{provider}{template}")


ALLOWED_TYPES: tuple[AllowedType, ...] = (
    _grouped("security_rule", "Microsoft.Network/networkSecurityGroups/securityRules", _NETWORK_NAME, _NETWORK_NAME),
    _grouped("network_security_group", "Microsoft.Network/networkSecurityGroups", _NETWORK_NAME),
    _grouped("key_vault", "Microsoft.KeyVault/vaults", _VAULT_NAME),
    _grouped("storage_account", "Microsoft.Storage/storageAccounts", _STORAGE_NAME),
    AllowedType("role_assignment", "Microsoft.Authorization/roleAssignments", "Microsoft.Authorization",
                re.compile(rf"(?P<scope>{_SCOPE})/providers/Microsoft\.Authorization/roleAssignments/"
                           rf"(?P<name>{_GUID})", _FLAGS),
                "{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
)
ALLOWED_TYPE_NAMES: list[str] = [allowed.arm_type for allowed in ALLOWED_TYPES]

_ALERT = re.compile(rf"{_SUBSCRIPTION}(?:/resourceGroups/(?P<group>{_GROUP_NAME}))?/providers/"
                    r"Microsoft\.Security/locations/(?P<location>[a-z0-9]{1,40})/alerts/"
                    r"(?P<name>[a-z0-9_-]{1,128})", _FLAGS)
_ROLE_DEFINITION = re.compile(rf"(?:/subscriptions/(?P<subscription>{_GUID}))?/providers/"
                              rf"Microsoft\.Authorization/roleDefinitions/(?P<name>{_GUID})", _FLAGS)


@dataclass(frozen=True)
class ResourceTarget:
    """An accepted resource id: what it is and the only ARM path it may be read from."""

    kind: ResourceKind
    arm_type: str
    provider: str
    name: str
    path: ArmPath


@dataclass(frozen=True)
class AlertTarget:
    """A Defender for Cloud alert id (subscription or resource-group level) and its ARM path."""

    name: str
    location: str
    path: ArmPath


def _screened(value: str, what: str) -> str:
    if not value:
        raise InputError(f"{what} is required")
    if len(value) > MAX_ID_LENGTH:
        raise InputError(f"{what} is longer than {MAX_ID_LENGTH} characters")
    if not value.startswith("/") or _FORBIDDEN.search(value):
        raise InputError(f"{what} must be a plain ARM id: starting with '/', without '..', '%', '?', '#', "
                         "backslashes, spaces, empty segments or a trailing '/'")
    return value


def resource_target(resource_id: str) -> ResourceTarget:
    """The allow-listed type the id matches whole, or InputError naming the allow-list."""
    _screened(resource_id, "resource id")
    for allowed in ALLOWED_TYPES:
        match = allowed.pattern.fullmatch(resource_id)
        if match:
            parts = match.groupdict()
            if parts.get("subscription"):
                parts["subscription"] = parts["subscription"].lower()
            path = allowed.template.format(**parts)
            return ResourceTarget(allowed.kind, allowed.arm_type, allowed.provider, parts["name"], ArmPath(path))
    claimed = parse_resource_id(resource_id).resource_type
    reason = f"resource type {claimed} is not in the allow-list" if claimed else "not an allow-listed resource id"
    raise InputError(f"{reason}; allowed: {', '.join(ALLOWED_TYPE_NAMES)}", allowed_types=ALLOWED_TYPE_NAMES)


def alert_target(alert_id: str) -> AlertTarget:
    _screened(alert_id, "alert id")
    match = _ALERT.fullmatch(alert_id)
    if not match:
        raise InputError("not a Defender for Cloud alert id: expected /subscriptions/{id}[/resourceGroups/"
                         "{name}]/providers/Microsoft.Security/locations/{location}/alerts/{name}")
    subscription, group = match["subscription"].lower(), match["group"]
    scope = f"/subscriptions/{subscription}" + (f"/resourceGroups/{group}" if group else "")
    path = f"{scope}/providers/Microsoft.Security/locations/{match['location']}/alerts/{match['name']}"
    return AlertTarget(match["name"], match["location"], ArmPath(path))


def role_definition_path(role_definition_id: str) -> ArmPath | None:
    """The ARM path of a role definition id found inside a role assignment, None if it looks odd."""
    match = _ROLE_DEFINITION.fullmatch(role_definition_id)
    if not match:
        return None
    scope = f"/subscriptions/{match['subscription'].lower()}" if match["subscription"] else ""
    return ArmPath(f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{match['name'].lower()}")


def subscription_path(subscription_id: str) -> ArmPath:
    if not re.fullmatch(_GUID, subscription_id, _FLAGS):
        raise ValueError("the subscription id setting is not a GUID")
    return ArmPath(f"/subscriptions/{subscription_id.lower()}")
