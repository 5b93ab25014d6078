"""What an IP address is: its class, the Azure service tags it belongs to, where it is.

The service tag index answers "which tags contain this address" with one dict look-up per prefix
length in use (a few dozen), instead of scanning tens of thousands of prefixes per request.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from shared.enrich.models import AddressClass, Geolocation, IpContext, ServiceTagMatch
from shared.http_errors import InputError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_IP_LENGTH = 45  # the longest textual IPv6 address (IPv4-mapped)

# Ranges Python's `is_private` folds together that an analyst wants told apart.
_DOCUMENTATION = tuple(ipaddress.ip_network(net) for net in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def parse_ip(value: str) -> IpAddress:
    """A single IPv4 or IPv6 address; networks, ports, zone ids (`%eth0`) and padding are refused."""
    if not value or len(value) > MAX_IP_LENGTH or not all(c in "0123456789abcdefABCDEF.:" for c in value):
        raise InputError("not an IP address: give one IPv4 or IPv6 address, e.g. 203.0.113.24 or 2001:db8::1")
    try:
        return ipaddress.ip_address(value)
    except ValueError as error:
        raise InputError(f"not an IP address: {error}") from None


def address_class(address: IpAddress) -> AddressClass:
    """The one class that best explains the address (documentation ranges are not "private" to us)."""
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast:
        return "multicast"
    if any(address in network for network in _DOCUMENTATION):
        return "documentation"
    if address in _SHARED:
        return "shared"
    if address.is_global:
        return "public"
    if address.is_private and not address.is_reserved:  # Python counts 240.0.0.0/4 as private too
        return "private"
    return "reserved"


class ServiceTag(NamedTuple):
    name: str
    region: str | None
    system_service: str | None
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class ServiceTagIndex:
    """Prefixes of every tag, keyed by (IP version, prefix length) then by network address."""

    version: str
    by_length: Mapping[tuple[int, int], Mapping[int, tuple[tuple[ServiceTag, str], ...]]]

    @classmethod
    def build(cls, tags: Iterable[ServiceTag], version: str) -> ServiceTagIndex:
        table: dict[tuple[int, int], dict[int, list[tuple[ServiceTag, str]]]] = defaultdict(lambda: defaultdict(list))
        for tag in tags:
            for prefix in tag.prefixes:
                try:
                    network = ipaddress.ip_network(prefix, strict=False)
                except ValueError:
                    continue  # one malformed prefix must not hide the rest of the tag
                table[(network.version, network.prefixlen)][int(network.network_address)].append((tag, prefix))
        frozen = {key: {net: tuple(entries) for net, entries in nets.items()} for key, nets in table.items()}
        # Most specific first, so regional tags come before the global tags that contain them.
        ordered = dict(sorted(frozen.items(), key=lambda item: -item[0][1]))
        return cls(version, ordered)

    def matches(self, address: IpAddress) -> list[ServiceTagMatch]:
        bits = address.max_prefixlen
        value = int(address)
        found: list[ServiceTagMatch] = []
        for (version, length), networks in self.by_length.items():
            if version != address.version:
                continue
            masked = value >> (bits - length) << (bits - length) if length else 0
            for tag, prefix in networks.get(masked, ()):
                found.append(ServiceTagMatch(name=tag.name, region=tag.region, system_service=tag.system_service,
                                             prefix=prefix))
        return found


class GeoLookup(Protocol):
    def get(self, ip_address: str) -> Any:
        """The database record for the address (maxminddb.Reader.get), or None."""


def _name(record: Mapping[str, Any], key: str) -> str | None:
    entry = record.get(key)
    names = entry.get("names") if isinstance(entry, Mapping) else None
    name = names.get("en") if isinstance(names, Mapping) else None
    return name if isinstance(name, str) else None


def geolocation(record: Any) -> Geolocation | None:
    """Read a GeoLite2/GeoIP2 City, Country or ASN record (whichever keys it has)."""
    if not isinstance(record, Mapping):
        return None
    country = record.get("country")
    location = record.get("location")
    location = location if isinstance(location, Mapping) else {}
    code = country.get("iso_code") if isinstance(country, Mapping) else None
    asn = record.get("autonomous_system_number")
    organization = record.get("autonomous_system_organization")
    latitude, longitude = location.get("latitude"), location.get("longitude")
    found = Geolocation(
        country_code=code if isinstance(code, str) else None, country=_name(record, "country"),
        city=_name(record, "city"),
        latitude=float(latitude) if isinstance(latitude, int | float) else None,
        longitude=float(longitude) if isinstance(longitude, int | float) else None,
        asn=asn if isinstance(asn, int) else None,
        as_organization=organization if isinstance(organization, str) else None)
    return found if found != Geolocation() else None


def ip_context(address: IpAddress, tags: ServiceTagIndex | None, geo: GeoLookup | None,
               notes: list[str]) -> IpContext:
    """The answer of `ip/{ip}`; `tags` None means no tag data (the notes say why)."""
    matches = tags.matches(address) if tags is not None else []
    location = geolocation(geo.get(str(address))) if geo is not None else None
    if geo is None:
        notes = [*notes, "no geolocation database configured (STORMWATCH_GEOIP_DATABASE)"]
    return IpContext(
        ip=str(address), version=address.version, address_class=address_class(address),
        is_global=address.is_global, is_azure=bool(matches) if tags is not None else None,
        service_tags=matches, service_tags_version=tags.version if tags is not None else None,
        geolocation=location, notes=notes)
