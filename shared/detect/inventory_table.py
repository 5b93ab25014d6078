"""The `inventory` table: detect_fn writes one aggregate per (subscription, day); inventory_fn reads ranges.

Writes go through `shared.detect.state.StateTable` (one ETag read-modify-write per touched aggregate per
batch, re-applied on 412/409/404), so redelivery and concurrent instances cannot distort a count.
Entities are kept: one per subscription per day is a few KB, and the dashboard's history is the point.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

from azure.data.tables import TableServiceClient

from shared.clients.storage import is_outage
from shared.detect.alerts import Alert
from shared.detect.inventory_aggregates import InventoryState, Item, Positioned, advance_inventory, batch_items
from shared.detect.state import (
    Applied,
    StateConflictError,
    StateKey,
    StateTable,
    TableEntityStore,
    decode_state,
    key_text,
    table_key,
)
from shared.values import for_log

log = logging.getLogger("stormwatch.inventory")
# Aggregates of different (subscription, day) keys are independent: overlap their round trips.
_IO = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stormwatch-inventory")


@dataclass
class InventoryTable:
    state: StateTable
    store: TableEntityStore

    def record(self, events: Sequence[Positioned], alerts: Iterable[Alert], partition: str) -> int:
        """Count a batch's events and alerts; returns the Table requests that took (the batch line's bill).

        Outages raise (the retry policy redelivers; the watermarks make that harmless); a bug or a
        deterministic rejection by storage is logged and the batch goes on: the inventory must never
        hold detection back.
        """
        touched = batch_items(events, alerts)
        spent: list[Applied] = []

        def apply(key: StateKey, items: list[Item]) -> None:
            spent.append(self.state.update(key, {}, lambda before: advance_inventory(before, partition, items)))

        try:
            list(_IO.map(apply, touched.keys(), touched.values()))
        except Exception as error:
            if isinstance(error, StateConflictError) or is_outage(error):
                raise
            log.exception("inventory of partition %s not updated for %d events", for_log(partition), len(events))
        return sum(applied.reads + applied.writes for applied in spent)

    def read(self, subscription: str | None, first: date, last: date) -> list[tuple[StateKey, InventoryState]]:
        """Aggregates of one subscription (or all) for days first..last inclusive."""
        query = "RowKey ge @first and RowKey le @last"
        parameters: dict[str, Any] = {"first": first.isoformat(), "last": last.isoformat()}
        if subscription is not None:
            query, parameters["subscription"] = f"PartitionKey eq @subscription and {query}", table_key(subscription)
        self.store.ensure_table()
        found = []
        for entity in self.store.table.query_entities(query, parameters=parameters):
            state = decode_state(dict(entity), InventoryState.from_json)
            if isinstance(state, InventoryState):
                found.append((StateKey(key_text(entity["PartitionKey"]), entity["RowKey"]), state))
        return found


def inventory_table(service: TableServiceClient, name: str) -> InventoryTable:
    """Nothing is sent yet: the table is created by the first read or write."""
    store = TableEntityStore(service.get_table_client(name))
    return InventoryTable(StateTable(store, decode=InventoryState.from_json), store)
