"""`shared.clients.table_batch` against a real Table service (Azurite): what it writes reads back through
the SDK, each refusal names the operation that caused it, and a refused transaction writes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
import pytest
from azure.data.tables import TableClient

from shared.clients.storage import is_outage
from shared.clients.table_batch import Operation, TransactionError, _results, submit
from shared.detect.rules.aggregate import Bucket, KeyState, Transition
from shared.detect.state import Change, MemoryEntityStore, StateKey, StateTable, TableEntityStore, Write
from tests.detect_fixtures import Tables, tables

__all__ = ["tables"]  # the fixture, used by name

PARTITION = "rule's.0"  # a quote, which the entity URL must double


def table_of(tables: Tables) -> TableClient:
    client = tables.service().get_table_client(tables.state)
    client.create_table()
    return client


def test_inserts_and_replaces_read_back_with_the_etags_returned(tables: Tables) -> None:
    client = table_of(tables)
    etags = submit(client, [Operation("insert", PARTITION, f"row-{n}", {"state": f"ünï {n}", "kind": "x"})
                            for n in range(3)])
    stored = client.get_entity(PARTITION, "row-1")
    assert dict(stored) == {"PartitionKey": PARTITION, "RowKey": "row-1", "state": "ünï 1", "kind": "x"}
    assert stored.metadata["etag"] == etags[1]
    replaced = submit(client, [Operation("replace", PARTITION, "row-1", {"state": "two"}, etags[1]),
                               Operation("delete", PARTITION, "row-2", etag=etags[2])])
    assert replaced[1] is None and client.get_entity(PARTITION, "row-1")["state"] == "two"
    assert sorted(row["RowKey"] for row in client.list_entities()) == ["row-0", "row-1"]


@pytest.mark.parametrize(("second", "status", "code"), [
    (Operation("insert", PARTITION, "row-0", {"state": "again"}), 409, "EntityAlreadyExists"),
    (Operation("replace", PARTITION, "row-0", {"state": "stale"}, "W/\"datetime'2020-01-01T00%3A00%3A00Z'\""),
     412, "UpdateConditionNotSatisfied"),
    (Operation("delete", PARTITION, "missing", etag="*"), 404, "ResourceNotFound"),
    (Operation("insert", PARTITION, "huge", {"state": "x" * 40_000}), 400, "PropertyValueTooLarge"),
])
def test_a_refused_operation_is_named_and_nothing_is_written(
        tables: Tables, second: Operation, status: int, code: str) -> None:
    client = table_of(tables)
    submit(client, [Operation("insert", PARTITION, "row-0", {"state": "first"})])
    with pytest.raises(TransactionError) as refused:
        submit(client, [Operation("insert", PARTITION, "new", {"state": "n"}), second])
    assert (refused.value.index, refused.value.status_code, refused.value.error_code) == (1, status, code)
    assert is_outage(refused.value) == (status not in (400, 409)), "a refused row is not an outage (412/404: conflicts)"
    assert [row["RowKey"] for row in client.list_entities()] == ["row-0"], "all or nothing"


def test_a_row_with_other_than_strings_is_written_alone_through_the_sdk(tables: Tables) -> None:
    state = StateTable(TableEntityStore(table_of(tables)))
    keys = [StateKey.of("typed", f"{n}k") for n in range(3)]  # one partition: one transaction would do
    outcomes = state.update_many([Change(key, {"count": 7}, lambda before: Transition(state=KeyState()))
                                  for key in keys])
    assert all(not isinstance(outcome, Exception) for outcome in outcomes)
    stored = state.store.read(*keys[2])
    assert stored is not None and stored.properties["count"] == 7


class _Recording(MemoryEntityStore):
    """The in-process store, remembering the size of each transaction it was sent."""

    def __init__(self) -> None:
        super().__init__(lambda: datetime.now(UTC))
        self.transactions: list[int] = []

    def write_batch(self, writes: Sequence[Write]) -> list[str]:
        self.transactions.append(len(writes))
        return super().write_batch(writes)


def test_a_partition_s_writes_are_cut_at_100_operations_and_at_the_size_bound() -> None:
    store = _Recording()
    state = StateTable(store)
    small = [Change(StateKey.of("many", f"{n:04d}"), {}, lambda before: Transition(state=KeyState()))
             for n in range(250)]
    assert all(not isinstance(outcome, Exception) for outcome in state.update_many(small))
    assert store.transactions == [100, 100, 50]
    store.transactions.clear()
    big = KeyState(buckets={start: Bucket(1, 0, 0, {f"{start:08x}{n:08x}" for n in range(900)})
                            for start in range(20)})  # about 340,000 characters of state each
    large = [Change(StateKey.of("big", f"a{n}"), {}, lambda before: Transition(state=big)) for n in range(5)]
    assert all(not isinstance(outcome, Exception) for outcome in state.update_many(large))
    assert store.transactions == [2, 2, 1], "a transaction stays well under the service's 4 MiB"


@pytest.mark.parametrize("named", ["²:bad", "7:past the batch", "99999999999999999999:huge"])
def test_a_failed_operation_the_answer_names_oddly_reads_as_the_first(named: str) -> None:
    """The index comes from the service's message text: one it cannot mean must not raise here or later."""
    body = (b"--batchresponse\r\nHTTP/1.1 400 Bad Request\r\n\r\n"
            + orjson.dumps({"odata.error": {"code": "InvalidInput", "message": {"value": named}}}))
    with pytest.raises(TransactionError) as refused:
        _results(body, 2)
    assert refused.value.index == 0
