"""IP facts: parsing, address classes, service tag membership and geolocation from a real MMDB file."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import maxminddb
import orjson
import pytest

from shared.enrich.ip import ServiceTagIndex, address_class, ip_context, parse_ip
from shared.enrich.servicetags import file_loader, parse_service_tags
from shared.http_errors import InputError
from tests.enrich.conftest import write_geo_database
from tests.enrich.fake_arm import arm_body


@pytest.mark.parametrize(("text", "expected"), [
    ("203.0.113.24", "documentation"), ("198.51.100.61", "documentation"), ("2001:db8:c0:10::d4", "documentation"),
    ("10.10.2.4", "private"), ("172.16.0.1", "private"), ("fd00::1", "private"), ("100.64.1.1", "shared"),
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("169.254.169.254", "link_local"), ("fe80::1", "link_local"),
    ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),  # noqa: S104 - not a bind
    ("240.0.0.1", "reserved"),
    ("13.68.20.7", "public"), ("2603:1030:210::5", "public"),
])
def test_address_classes(text: str, expected: str) -> None:
    assert address_class(parse_ip(text)) == expected


@pytest.mark.parametrize("bad", ["", "10.0.0.0/8", "10.0.0.1:443", "fe80::1%eth0", "010.1.1.1", "1.2.3",
                                 "localhost", "::ffff:1.2.3.4.5", "1" * 46, "1.2.3.4 ", "%31.2.3.4"])
def test_anything_but_one_address_is_refused(bad: str) -> None:
    with pytest.raises(InputError):
        parse_ip(bad)


def test_canonical_form() -> None:
    assert str(parse_ip("2001:DB8:0:0::D4")) == "2001:db8::d4"


@pytest.fixture
def arm_tags() -> ServiceTagIndex:
    tags, change = parse_service_tags(arm_body("service-tags"))
    return ServiceTagIndex.build(tags, f"change {change}")


def test_service_tags_most_specific_first(arm_tags: ServiceTagIndex) -> None:
    matches = arm_tags.matches(parse_ip("13.68.20.7"))
    assert [(match.name, match.prefix) for match in matches] == [
        ("AzureMonitor", "13.68.20.0/24"), ("AzureCloud.eastus", "13.68.0.0/17"), ("AzureCloud", "13.64.0.0/11")]
    assert matches[0].system_service == "AzureMonitor" and matches[1].region == "eastus"


def test_service_tags_single_address_prefix_and_ipv6(arm_tags: ServiceTagIndex) -> None:
    assert [match.name for match in arm_tags.matches(parse_ip("13.64.39.16"))] == ["ApiManagement", "AzureCloud"]
    assert [match.name for match in arm_tags.matches(parse_ip("2603:1030:211::1"))] == ["AzureCloud.eastus",
                                                                                       "AzureCloud"]
    assert arm_tags.matches(parse_ip("13.96.0.1")) == []
    assert arm_tags.matches(parse_ip("203.0.113.24")) == []


def test_a_malformed_prefix_does_not_hide_the_rest() -> None:
    document = {"changeNumber": 1, "values": [{"name": "Odd", "properties": {"addressPrefixes": ["nonsense",
                                                                                                 "20.1.0.0/16"]}}]}
    tags, _ = parse_service_tags(document)
    assert [match.prefix for match in ServiceTagIndex.build(tags, "x").matches(parse_ip("20.1.2.3"))] == ["20.1.0.0/16"]


def test_offline_file_in_the_download_format(tmp_path: Path) -> None:
    download = tmp_path / "ServiceTags_Public_20261116.json"
    download.write_bytes(orjson.dumps(arm_body("service-tags")))
    index = file_loader(download)()
    assert index.version == "file ServiceTags_Public_20261116.json, change 63"
    assert index.matches(parse_ip("20.33.1.1"))[0].name == "AzureCloud"


def test_geolocation_from_a_maxmind_format_database(tmp_path: Path, arm_tags: ServiceTagIndex) -> None:
    with maxminddb.open_database(write_geo_database(tmp_path / "city.mmdb")) as reader:
        risky = ip_context(parse_ip("198.51.100.143"), arm_tags, reader, [])
        build_agent = ip_context(parse_ip("2001:db8:4d2::17"), arm_tags, reader, [])
        office = ip_context(parse_ip("203.0.113.24"), arm_tags, reader, [])
    assert risky.geolocation is not None
    assert (risky.geolocation.country_code, risky.geolocation.city) == ("BR", "São Paulo")
    assert risky.geolocation.latitude == pytest.approx(-23.5475)
    assert build_agent.geolocation is not None and build_agent.geolocation.country == "Germany"
    assert office.geolocation is None
    assert (risky.is_azure, risky.notes) == (False, [])


def test_without_tag_data_azure_membership_is_unknown_not_false() -> None:
    answer = ip_context(ipaddress.ip_address("13.68.20.7"), None, None, ["service tags unavailable: 403"])
    assert answer.is_azure is None
    assert answer.notes == ["service tags unavailable: 403",
                            "no geolocation database configured (STORMWATCH_GEOIP_DATABASE)"]
