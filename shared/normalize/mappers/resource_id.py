"""Azure resource ids → subscription, resource group, provider, full type and name, in any casing.

`/subscriptions/S/resourceGroups/G/providers/Microsoft.Network/networkSecurityGroups/N/securityRules/R`
has type `Microsoft.Network/networkSecurityGroups/securityRules` and name `R`. Extension resources
(`.../providers/Microsoft.Web/sites/x/providers/Microsoft.Security/assessments/y`) take the last provider.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple


class ResourceId(NamedTuple):
    subscription_id: str | None
    resource_group: str | None
    resource_provider: str | None
    resource_type: str | None
    resource_name: str | None


_EMPTY = ResourceId(None, None, None, None, None)


@lru_cache(maxsize=8192)
def parse_resource_id(resource_id: str) -> ResourceId:
    """Parse leniently: unknown shapes give what can be read and None for the rest, never an error."""
    segments = [segment for segment in resource_id.strip().split("/") if segment]
    if not segments:
        return _EMPTY
    lowered = [segment.lower() for segment in segments]
    subscription_id = resource_group = None
    if lowered[0] == "subscriptions" and len(segments) > 1:
        subscription_id = segments[1].lower()
    if len(lowered) > 3 and lowered[2] == "resourcegroups":
        resource_group = segments[3]
    provider_at = _last_index(lowered, "providers")
    if provider_at is None or provider_at + 1 >= len(segments):
        if resource_group is not None and len(segments) == 4:
            return ResourceId(subscription_id, resource_group, "Microsoft.Resources",
                              "Microsoft.Resources/resourceGroups", resource_group)
        if subscription_id is not None and len(segments) == 2:
            return ResourceId(subscription_id, None, "Microsoft.Resources",
                              "Microsoft.Resources/subscriptions", subscription_id)
        return ResourceId(subscription_id, resource_group, None, None, None)
    provider = segments[provider_at + 1]
    rest = segments[provider_at + 2:]
    types = rest[0::2]
    names = rest[1::2]
    resource_type = "/".join([provider, *types]) if types else provider
    resource_name = names[-1] if names else None
    return ResourceId(subscription_id, resource_group, provider, resource_type, resource_name)


def _last_index(items: list[str], wanted: str) -> int | None:
    for index in range(len(items) - 1, -1, -1):
        if items[index] == wanted:
            return index
    return None


def region_of(resource_id: str | None) -> str | None:
    """The region a resource id names (`.../providers/Microsoft.Security/locations/<region>/alerts/...`)."""
    if not resource_id:
        return None
    parts = resource_id.split("/")
    lowered = [part.lower() for part in parts]
    if "locations" in lowered:
        index = lowered.index("locations")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None
