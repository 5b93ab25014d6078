"""Entity-group transactions (`$batch`) of string-valued entities, built and read here, sent through the
table client's own pipeline (its credential, retries, timeouts and hooks).

Why not `TableClient.submit_transaction`: azure-core builds and parses the multipart body with the
`email` package and a thread pool per request, about 3.5 ms of CPU per transaction before the first
entity (bench/scale.py). Detect sends one transaction per state partition per batch, and Python CPU
per request is what bounds events per second. The wire format is the Table service's OData batch
(multipart/mixed with one changeset); the answer is one part per operation, or on failure the one
part of the operation that failed, its message starting with that operation's index.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

import orjson
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient

_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3})", re.MULTILINE)
_ETAG = re.compile(rb"^ETag: *(.+?)\r?$", re.MULTILINE | re.IGNORECASE)


class Operation(NamedTuple):
    kind: Literal["insert", "replace", "delete"]
    partition_key: str
    row_key: str
    properties: Mapping[str, str] | None = None  # insert and replace: every property a string
    etag: str | None = None  # replace and delete: only if the entity is still at this ETag


class TransactionError(HttpResponseError):
    """The transaction was refused as a whole: `status_code` and `error_code` of the operation at `index`."""

    def __init__(self, status: int, code: str | None, message: str, index: int) -> None:
        super().__init__(message=message)
        self.status_code, self.error_code, self.index = status, code, index


def submit(table: TableClient, operations: Sequence[Operation]) -> list[str | None]:
    """Run the operations of one PartitionKey as one transaction; the ETag each wrote (None: a delete).

    Raises TransactionError naming the operation that failed (nothing was applied), or the pipeline's
    HttpResponseError / connection error when the request as a whole failed.
    """
    base = f"{table.scheme}://{table._primary_hostname}"  # the endpoint submit_transaction uses
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    parts = [_part(base, table.table_name, operation) for operation in operations]
    body = b"".join([
        f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode(),
        *(f"--{changeset}\r\n".encode() + part for part in parts),
        f"--{changeset}--\r\n--{batch}--\r\n".encode(),
    ])
    request = HttpRequest("POST", f"{base}/$batch", content=body, headers={
        "x-ms-version": table.api_version, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
        "Content-Type": f"multipart/mixed; boundary={batch}", "Accept": "application/json"})
    response = table._client.send_request(request, stream=True)  # its pipeline: auth, retries, hooks
    if response.status_code != 202:
        raise HttpResponseError(response=response)
    return _results(response.read(), len(operations))


def _part(base: str, table: str, operation: Operation) -> bytes:
    headers = ["Accept: application/json;odata=minimalmetadata", "DataServiceVersion: 3.0"]
    if operation.kind == "insert":
        line = f"POST {base}/{table} HTTP/1.1"
        headers.append("Prefer: return-no-content")
    else:
        keys = f"PartitionKey='{_key(operation.partition_key)}',RowKey='{_key(operation.row_key)}'"
        line = f"{'PUT' if operation.kind == 'replace' else 'DELETE'} {base}/{table}({keys}) HTTP/1.1"
        headers.append(f"If-Match: {operation.etag or '*'}")
    content = b""
    if operation.properties is not None:
        content = orjson.dumps({**operation.properties, "PartitionKey": operation.partition_key,
                                "RowKey": operation.row_key})
        headers += ["Content-Type: application/json", f"Content-Length: {len(content)}"]
    head = "\r\n".join(["Content-Type: application/http", "Content-Transfer-Encoding: binary", "", line, *headers])
    return head.encode() + b"\r\n\r\n" + content + b"\r\n"


def _key(value: str) -> str:
    return quote(value.replace("'", "''"), safe="")


def _results(body: bytes, count: int) -> list[str | None]:
    """The ETags of a committed transaction, or TransactionError for the part that failed."""
    found = list(_STATUS.finditer(body))
    statuses = [int(match.group(1)) for match in found]
    if len(statuses) == count and all(200 <= status < 300 for status in statuses):
        ends = [match.start() for match in found[1:]] + [len(body)]
        etags = [_ETAG.search(body, match.end(), end) for match, end in zip(found, ends, strict=True)]
        return [etag.group(1).decode().strip() if etag else None for etag in etags]
    status = next((status for status in statuses if not 200 <= status < 300), 500)
    code, message = _error(body)
    # The service names the failed operation "3:..."; a number it could not mean (past the batch) reads as 0.
    named = message.split(":", 1)[0]
    index = int(named) if named.isascii() and named.isdigit() and int(named) < count else 0
    raise TransactionError(status, code, message or f"transaction answered {statuses}", index)


def _error(body: bytes) -> tuple[str | None, str]:
    start = body.find(b'{"odata.error"')
    if start < 0:
        return None, ""
    try:
        error: dict[str, Any] = orjson.loads(body[start:body.rfind(b"}") + 1])["odata.error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None, ""
    message = error.get("message")
    text = message.get("value", "") if isinstance(message, dict) else str(message or "")
    return error.get("code"), text
