"""What a live resource means for an investigation: its security-relevant settings and a plain verdict.

Pure functions of ARM's JSON (the shapes of the documented GET responses); no I/O. Rules are judged one
by one in priority order: whether a higher-priority Deny shadows an Allow is left to the reader, who
sees the priorities beside the verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from shared.enrich.models import (
    KeyVaultView,
    ResourceContext,
    Risk,
    RoleAssignmentView,
    SecurityRuleView,
    StorageAccountView,
)
from shared.enrich.resource_ids import ResourceKind, ResourceTarget
from shared.values import as_dict, text

ANY_SOURCE = frozenset({"*", "internet", "any", "0.0.0.0/0", "::/0"})
# Management, database and file-sharing ports that should never face the whole internet.
SENSITIVE_PORTS = frozenset({20, 21, 22, 23, 135, 139, 445, 1433, 1434, 2375, 2376, 3306, 3389, 5432, 5900,
                             5985, 5986, 6379, 9200, 11211, 27017})
PRIVILEGED_ROLE_IDS = frozenset({
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
    "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
    "18d7d88d-d35e-4fb5-a5c3-7773c4a72cc9",  # User Access Administrator
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168",  # Role Based Access Control Administrator
})
PRIVILEGED_ROLE_NAMES = frozenset({"owner", "contributor", "user access administrator",
                                   "role based access control administrator"})
_RISK_ORDER: tuple[Risk, ...] = ("none", "low", "medium", "high")
_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "esp": "ESP", "ah": "AH"}


def highest(risks: Sequence[Risk]) -> Risk:
    return max(risks, key=_RISK_ORDER.index, default="none")


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _values(properties: dict[str, Any], single: str, plural: str) -> list[str]:
    """A rule field ARM gives either as one value (`sourceAddressPrefix`) or as a list (`...Prefixes`)."""
    many = properties.get(plural)
    values = [item for item in many if isinstance(item, str) and item] if isinstance(many, list) else []
    one = text(properties.get(single))
    return values or ([one] if one else [])


def _covers(port_range: str, port: int) -> bool:
    if port_range == "*":
        return True
    low, _, high = port_range.partition("-")
    try:
        return int(low) <= port <= int(high or low)
    except ValueError:
        return False


def _describe_ports(protocol: str, ports: list[str]) -> str:
    if protocol == "ICMP":
        return "ICMP"
    if not ports or "*" in ports:
        return f"{protocol} on all ports"
    if len(ports) == 1 and "-" not in ports[0]:
        return f"{protocol} {ports[0]}"
    return f"{protocol} ports {', '.join(ports)}"


def _describe_peers(prefixes: list[str], groups: list[str], anyone: str) -> str:
    if not groups and (not prefixes or any(prefix.lower() in ANY_SOURCE for prefix in prefixes)):
        return anyone
    return ", ".join([*prefixes, *(f"application security group {group}" for group in groups)])


def _group_names(properties: dict[str, Any], key: str) -> list[str]:
    groups = properties.get(key)
    if not isinstance(groups, list):
        return []
    ids = [group.get("id") for group in groups if isinstance(group, dict)]
    return [group_id.rsplit("/", 1)[-1] for group_id in ids if isinstance(group_id, str)]


def security_rule(document: dict[str, Any]) -> SecurityRuleView:
    """One NSG rule as data plus its verdict, e.g. "allows inbound TCP 9753 from any source"."""
    properties = as_dict(document.get("properties"))
    access = text(properties.get("access"))
    direction = text(properties.get("direction"))
    protocol = text(properties.get("protocol"))
    sources = _values(properties, "sourceAddressPrefix", "sourceAddressPrefixes")
    destinations = _values(properties, "destinationAddressPrefix", "destinationAddressPrefixes")
    source_groups = _group_names(properties, "sourceApplicationSecurityGroups")
    destination_groups = _group_names(properties, "destinationApplicationSecurityGroups")
    ports = _values(properties, "destinationPortRange", "destinationPortRanges")
    allows = (access or "").lower() == "allow"
    inbound = (direction or "").lower() != "outbound"
    protocol_text = _PROTOCOLS.get((protocol or "*").lower(), "any protocol")
    source_text = _describe_peers(sources, source_groups, "any source")
    destination_text = _describe_peers(destinations, destination_groups, "any destination")
    words = ["allows" if allows else "denies", "inbound" if inbound else "outbound",
             _describe_ports(protocol_text, ports)]
    # Inbound rules are about who may come in, outbound rules about where traffic may go.
    if inbound or source_text != "any source":
        words.append(f"from {source_text}")
    if not inbound or destination_text != "any destination":
        words.append(f"to {destination_text}")
    risk = _rule_risk(allows, inbound, open_to_anyone=source_text == "any source", ports=ports,
                      protocol=protocol_text)
    priority = properties.get("priority")
    return SecurityRuleView(
        name=text(document.get("name")) or "", priority=priority if isinstance(priority, int) else None,
        direction=direction, access=access, protocol=protocol, source_address_prefixes=sources,
        source_port_ranges=_values(properties, "sourcePortRange", "sourcePortRanges"),
        destination_address_prefixes=destinations, destination_port_ranges=ports,
        description=text(properties.get("description")), verdict=" ".join(words), risk=risk)


def _rule_risk(allows: bool, inbound: bool, *, open_to_anyone: bool, ports: list[str], protocol: str) -> Risk:
    if not allows:
        return "none"
    if not (inbound and open_to_anyone):
        return "low"
    if protocol == "ICMP":
        return "low"
    all_ports = not ports or "*" in ports
    if all_ports or any(_covers(port_range, port) for port_range in ports for port in SENSITIVE_PORTS):
        return "high"
    return "medium"


def _nsg_summary(document: dict[str, Any]) -> tuple[list[SecurityRuleView], str]:
    rules = as_dict(document.get("properties")).get("securityRules")
    views = [security_rule(rule) for rule in rules if isinstance(rule, dict)] if isinstance(rules, list) else []
    views.sort(key=lambda rule: ((rule.direction or "").lower() == "outbound", rule.priority or 0))
    exposed = [rule for rule in views if rule.risk in ("high", "medium")]
    if not exposed:
        return views, (f"{len(views)} custom rule(s); none allows inbound traffic from any source "
                       "(default rules not shown)")
    listed = "; ".join(f"{rule.name}: {rule.verdict}" for rule in exposed)
    return views, f"{len(exposed)} of {len(views)} custom rule(s) allow inbound traffic from any source: {listed}"


def _findings(checks: list[tuple[bool, str, Risk]]) -> list[tuple[str, Risk]]:
    """The findings whose condition holds, in the order they are listed (most severe first)."""
    return [(finding, risk) for present, finding, risk in checks if present]


def _network_access(properties: dict[str, Any]) -> tuple[str | None, str | None, list[str], bool]:
    """Public network access, the firewall's default action, its IP rules, and whether anyone gets in."""
    public = text(properties.get("publicNetworkAccess"))
    acls = as_dict(properties.get("networkAcls"))
    default_action = text(acls.get("defaultAction"))
    rules = acls.get("ipRules")
    ip_rules = [rule["value"] for rule in rules if isinstance(rule, dict) and isinstance(rule.get("value"), str)] \
        if isinstance(rules, list) else []
    open_to_all = (public or "Enabled").lower() != "disabled" and (default_action or "Allow").lower() == "allow"
    return public, default_action, ip_rules, open_to_all


def _key_vault(document: dict[str, Any]) -> tuple[KeyVaultView, list[tuple[str, Risk]]]:
    properties = as_dict(document.get("properties"))
    public, default_action, ip_rules, open_to_all = _network_access(properties)
    policies = properties.get("accessPolicies")
    access_policies = [{"object_id": policy.get("objectId"), "permissions": policy.get("permissions")}
                       for policy in policies if isinstance(policy, dict)] if isinstance(policies, list) else []
    view = KeyVaultView(
        vault_uri=text(properties.get("vaultUri")), public_network_access=public,
        network_default_action=default_action, ip_rules=ip_rules,
        soft_delete=_flag(properties.get("enableSoftDelete")),
        purge_protection=_flag(properties.get("enablePurgeProtection")),
        rbac_authorization=_flag(properties.get("enableRbacAuthorization")), access_policies=access_policies)
    return view, _findings([
        (open_to_all, "reachable from any network", "medium"),
        (view.soft_delete is False, "soft delete off: deleted secrets cannot be recovered", "medium"),
        (view.purge_protection is not True, "purge protection off: a deleted vault can be purged at once", "low"),
        (not view.rbac_authorization, f"{len(access_policies)} access policies grant data access (not Azure RBAC)",
         "none"),
    ])


def _storage_account(document: dict[str, Any]) -> tuple[StorageAccountView, list[tuple[str, Risk]]]:
    properties = as_dict(document.get("properties"))
    public, default_action, _, open_to_all = _network_access(properties)
    sku = document.get("sku")
    view = StorageAccountView(
        kind=text(document.get("kind")), sku=text(sku.get("name")) if isinstance(sku, dict) else None,
        public_network_access=public, network_default_action=default_action,
        allow_blob_public_access=_flag(properties.get("allowBlobPublicAccess")),
        allow_shared_key_access=_flag(properties.get("allowSharedKeyAccess")),
        https_only=_flag(properties.get("supportsHttpsTrafficOnly")),
        minimum_tls_version=text(properties.get("minimumTlsVersion")))
    return view, _findings([
        (bool(view.allow_blob_public_access), "anonymous (public) blob access allowed", "high"),
        (open_to_all, "reachable from any network", "medium"),
        (view.https_only is False, "plain HTTP accepted", "medium"),
        (view.allow_shared_key_access is not False, "shared key (account key and SAS) access allowed", "low"),
        (view.minimum_tls_version in ("TLS1_0", "TLS1_1"), f"minimum TLS version {view.minimum_tls_version}",
         "low"),
    ])


def _role_assignment(document: dict[str, Any], role_name: str | None) -> tuple[RoleAssignmentView, str, Risk]:
    properties = as_dict(document.get("properties"))
    definition = text(properties.get("roleDefinitionId"))
    definition_guid = definition.rsplit("/", 1)[-1].lower() if definition else None
    privileged = definition_guid in PRIVILEGED_ROLE_IDS or (role_name or "").lower() in PRIVILEGED_ROLE_NAMES
    scope = text(properties.get("scope"))
    view = RoleAssignmentView(
        role_definition_id=definition, role_name=role_name, principal_id=text(properties.get("principalId")),
        principal_type=text(properties.get("principalType")), scope=scope,
        condition=text(properties.get("condition")), created_on=text(properties.get("createdOn")),
        created_by=text(properties.get("createdBy")), privileged=privileged)
    segments = (scope or "").strip("/").split("/")
    if len(segments) == 2:
        where, breadth = f"subscription {segments[1]}", 2
    elif len(segments) == 4:
        where, breadth = f"resource group {segments[3]}", 1
    else:
        where, breadth = f"resource {segments[-1]}" if scope else "an unknown scope", 0
    role = role_name or f"role {definition_guid or 'unknown'}"
    principal = " ".join(filter(None, [view.principal_type or "principal", view.principal_id]))
    risk: Risk = ("low", "medium", "high")[breadth] if privileged else "low"
    return view, f"grants {role} to {principal} at {where}", risk


def _summarize_findings(findings: list[tuple[str, Risk]], clean: str) -> tuple[str, Risk]:
    risky = [text for text, risk in findings if risk != "none"]
    notes = [text for text, risk in findings if risk == "none"]
    verdict = "; ".join(risky or [clean]) + "".join(f"; {note}" for note in notes)
    return verdict, highest([risk for _, risk in findings])


def resource_context(target: ResourceTarget, document: dict[str, Any], *, fetched_at: datetime,
                     role_name: str | None = None) -> ResourceContext:
    """The answer of `resource?id=`: identity of the resource, its settings and a plain verdict."""
    base: dict[str, Any] = {
        "id": text(document.get("id")) or target.path, "kind": target.kind, "type": target.arm_type,
        "name": text(document.get("name")) or target.name, "location": text(document.get("location")),
        "fetched_at": fetched_at,
    }
    build = _BUILDERS[target.kind]
    return ResourceContext.model_validate({**base, **build(document, role_name)})


def _rule_part(document: dict[str, Any], _: str | None) -> dict[str, Any]:
    rule = security_rule(document)
    return {"rules": [rule], "verdict": rule.verdict, "risk": rule.risk}


def _nsg_part(document: dict[str, Any], _: str | None) -> dict[str, Any]:
    rules, verdict = _nsg_summary(document)
    return {"rules": rules, "verdict": verdict, "risk": highest([rule.risk for rule in rules])}


def _vault_part(document: dict[str, Any], _: str | None) -> dict[str, Any]:
    view, findings = _key_vault(document)
    verdict, risk = _summarize_findings(findings, "private network access only; purge protection on")
    return {"key_vault": view, "verdict": verdict, "risk": risk}


def _storage_part(document: dict[str, Any], _: str | None) -> dict[str, Any]:
    view, findings = _storage_account(document)
    verdict, risk = _summarize_findings(findings, "no anonymous, shared-key or open network access")
    return {"storage_account": view, "verdict": verdict, "risk": risk}


def _assignment_part(document: dict[str, Any], role_name: str | None) -> dict[str, Any]:
    view, verdict, risk = _role_assignment(document, role_name)
    return {"role_assignment": view, "verdict": verdict, "risk": risk}


_BUILDERS: dict[ResourceKind, Callable[[dict[str, Any], str | None], dict[str, Any]]] = {
    "security_rule": _rule_part,
    "network_security_group": _nsg_part,
    "key_vault": _vault_part,
    "storage_account": _storage_part,
    "role_assignment": _assignment_part,
}
