"""The enrichment cache in a real Table (Azurite): expiry, large entries split across rows, torn writes,
and a store that cannot be reached (a miss, never an error)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient, UpdateMode

from shared.cli import azurite
from shared.clients.storage import emulator_connection_string
from shared.enrich.cache import PART_BYTES, InProcessCache, TableCache
from tests.enrich.conftest import cache_table_name

NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def service(azurite_instance: azurite.Azurite) -> TableServiceClient:
    return TableServiceClient.from_connection_string(azurite_instance.connection_string)


@pytest.fixture
def table_cache(service: TableServiceClient) -> TableCache:
    return TableCache(service, cache_table_name(__name__))


def test_an_entry_lives_until_it_expires(table_cache: TableCache) -> None:
    table_cache.put("resource", "/subscriptions/x/nsg?api-version=1", b'{"name": "nsg-web"}', now=NOW, ttl=HOUR,
                    note="63")
    cached = table_cache.get("resource", "/subscriptions/x/nsg?api-version=1", NOW + timedelta(minutes=59))
    assert cached is not None
    assert (cached.payload, cached.stored_at, cached.note) == (b'{"name": "nsg-web"}', NOW, "63")
    assert table_cache.get("resource", "/subscriptions/x/nsg?api-version=1", NOW + HOUR) is None
    assert table_cache.get("alert", "/subscriptions/x/nsg?api-version=1", NOW) is None
    assert table_cache.get("resource", "/subscriptions/x/other", NOW) is None


def test_a_replaced_entry_loses_its_old_note(table_cache: TableCache) -> None:
    table_cache.put("servicetags", "tags", b"[1]", now=NOW, ttl=HOUR, note="63")
    table_cache.put("servicetags", "tags", b"[2]", now=NOW, ttl=HOUR)
    cached = table_cache.get("servicetags", "tags", NOW)
    assert cached is not None and (cached.payload, cached.note) == (b"[2]", None)


def test_payloads_larger_than_a_property_are_split_across_rows(table_cache: TableCache,
                                                               service: TableServiceClient) -> None:
    payload = os.urandom(3 * PART_BYTES)  # incompressible: four rows after compression
    table_cache.put("servicetags", "all tags", payload, now=NOW, ttl=HOUR)
    cached = table_cache.get("servicetags", "all tags", NOW)
    assert cached is not None and cached.payload == payload
    rows = list(service.get_table_client(table_cache._table_name).list_entities())
    assert len(rows) == 4


def test_rows_of_two_different_writes_are_never_stitched_together(table_cache: TableCache,
                                                                  service: TableServiceClient) -> None:
    table_cache.put("servicetags", "all tags", os.urandom(2 * PART_BYTES), now=NOW, ttl=HOUR)
    table = service.get_table_client(table_cache._table_name)
    second = next(row for row in table.list_entities() if row["RowKey"].endswith(".001"))
    table.upsert_entity({**second, "generation": "another write"}, mode=UpdateMode.REPLACE)
    assert table_cache.get("servicetags", "all tags", NOW) is None


def test_forget(table_cache: TableCache) -> None:
    table_cache.put("alert", "a", b"{}", now=NOW, ttl=HOUR)
    table_cache.forget("alert", "a")
    table_cache.forget("alert", "never stored")
    assert table_cache.get("alert", "a", NOW) is None


def test_an_unreachable_store_is_a_miss_and_a_put_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = TableServiceClient.from_connection_string(
        emulator_connection_string({"blob": 9, "queue": 9, "table": 9}), retry_total=0, connection_timeout=1)
    cache = TableCache(unreachable, "enrichcache")
    cache.put("resource", "k", b"{}", now=NOW, ttl=HOUR)
    assert cache.get("resource", "k", NOW) is None
    cache.forget("resource", "k")
    assert "enrich cache" in caplog.text


def test_in_process_cache_has_the_same_expiry() -> None:
    cache = InProcessCache()
    cache.put("resource", "k", b"{}", now=NOW, ttl=HOUR)
    assert cache.get("resource", "k", NOW + timedelta(minutes=1)) is not None
    assert cache.get("resource", "k", NOW + HOUR) is None
    cache.forget("resource", "k")
    assert cache.get("resource", "k", NOW) is None
