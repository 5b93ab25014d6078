"""Fixtures of the enrichment tests: the fake ARM, app settings pointing at it, and calls to the
registered HTTP functions exactly as the Functions host makes them."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import orjson
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet  # mmdb-writer's network type

from shared.cli import azurite
from shared.cli.serve import ServedProcess, spawn
from shared.clients import wiring
from tests.conftest import indexed_functions
from tests.enrich.fake_arm import SUBSCRIPTION, FakeArm, running

_TABLES = itertools.count()
ENRICH_SETTINGS = ("STORMWATCH_SERVICE_TAGS_FILE", "STORMWATCH_GEOIP_DATABASE", "STORMWATCH_ALLOW_ALERT_DISMISS",
                   "STORMWATCH_ARM_API_VERSIONS", "STORMWATCH_TABLE_ENDPOINT")


@pytest.fixture
def fake_arm() -> Iterator[FakeArm]:
    yield from running()


def cache_table_name(module: str) -> str:
    """A table of its own per test (letters and digits only, as Table Storage wants)."""
    return "enrich" + "".join(c for c in module.rsplit(".", 1)[-1] if c.isalnum()) + str(next(_TABLES))


@pytest.fixture
def enrich_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, azurite_instance: azurite.Azurite,
               fake_arm: FakeArm) -> Iterator[pytest.MonkeyPatch]:
    """Settings of a local run: the fake ARM, the session's Azurite with a fresh cache table."""
    for name in ENRICH_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STORMWATCH_STORAGE_CONNECTION_STRING", azurite_instance.connection_string)
    monkeypatch.setenv("STORMWATCH_ENRICH_CACHE_TABLE", cache_table_name(request.module.__name__))
    monkeypatch.setenv("STORMWATCH_ARM_ENDPOINT", fake_arm.url)
    monkeypatch.setenv("STORMWATCH_SUBSCRIPTION_ID", SUBSCRIPTION)
    monkeypatch.setenv("STORMWATCH_SERVICE_TAGS_REGION", "eastus")
    wiring.reset()
    yield monkeypatch
    wiring.reset()


def served_settings(fake_arm: FakeArm, azurite_instance: azurite.Azurite, module: str) -> dict[str, str]:
    """The environment of a served app: the fake ARM, Azurite, and dismissal enabled (so it is reachable)."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("STORMWATCH_")}
    return inherited | {
        "STORMWATCH_ARM_ENDPOINT": fake_arm.url, "STORMWATCH_SUBSCRIPTION_ID": SUBSCRIPTION,
        "STORMWATCH_SERVICE_TAGS_REGION": "eastus", "STORMWATCH_ALLOW_ALERT_DISMISS": "true",
        "STORMWATCH_STORAGE_CONNECTION_STRING": azurite_instance.connection_string,
        "STORMWATCH_ENRICH_CACHE_TABLE": cache_table_name(module)}


@pytest.fixture(scope="module")
def module_arm() -> Iterator[FakeArm]:
    """One fake ARM for the tests of a module that share a served app."""
    yield from running()


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, module_arm: FakeArm,
           azurite_instance: azurite.Azurite) -> Iterator[ServedProcess]:
    """`python -m shared serve` on a free port of 127.0.0.1, for the tests of one module."""
    process = spawn(served_settings(module_arm, azurite_instance, request.module.__name__))
    yield process
    process.stop()


def write_geo_database(path: Path) -> Path:
    """A tiny GeoLite2-City-shaped database: one documentation /24 in Brazil, one IPv6 range in Germany."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City")
    writer.insert_network(IPSet(["198.51.100.0/24"]), {
        "country": {"iso_code": "BR", "names": {"en": "Brazil"}}, "city": {"names": {"en": "São Paulo"}},
        "location": {"latitude": -23.5475, "longitude": -46.6361}})
    writer.insert_network(IPSet(["2001:db8:4d2::/48"]), {"country": {"iso_code": "DE", "names": {"en": "Germany"}}})
    writer.to_db_file(str(path))
    return path


def call(function: str, method: str = "GET", *, route: dict[str, str] | None = None,
         params: dict[str, str] | None = None, body: bytes = b"",
         headers: dict[str, str] | None = None) -> func.HttpResponse:
    """Invoke a registered function with the HttpRequest the host would build."""
    url = f"http://127.0.0.1/api/{function}" + (f"?{urlencode(params)}" if params else "")
    request = func.HttpRequest(method, url, headers=headers or {"content-type": "application/json"},
                               params=params or {}, route_params=route or {}, body=body)
    response: func.HttpResponse = indexed_functions()[function].get_user_function()(request)
    return response


def json_of(response: func.HttpResponse) -> Any:
    return orjson.loads(response.get_body())
