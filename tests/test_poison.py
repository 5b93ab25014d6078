"""Poison-proofing, normalize side: hostile records end as dead letters through the real normalize_fn
(dead letters in Azurite), the dead-letter write survives any reason, the store's outage/content split,
and the per-body caps bound the memory of a batch of degenerate bodies (measured, not timed)."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote

import orjson
import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient

from shared.cli import azurite
from shared.clients.dead_letters import BlobDeadLetterStore, header_value
from shared.clients.publisher import InProcessPublisher
from shared.clients.storage import DEV_ACCOUNT, DEV_KEY, is_outage
from shared.normalize.batch import MAX_BODY_BYTES, MAX_DEAD_LETTERS_PER_BODY, MAX_RECORDS_PER_BODY
from shared.normalized_event import DeadLetter
from tests.conftest import REPO, sample
from tests.test_normalize_fn import dead_letters_in, run_normalize

__all__ = ["run_normalize"]  # the fixture, used by name

GOOD = {"time": "2026-11-01T10:00:00Z", "category": "Administrative", "operationName": "A.B/c/WRITE",
        "resourceId": "/subscriptions/s-1/resourceGroups/g/providers/A.B/c/d", "eventDataId": "e-1"}
Run = Callable[..., tuple[InProcessPublisher, str]]


def nested_list(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def value_chain(depth: int) -> str:
    return '{"value":' * depth + '"A.B/c/WRITE"' + "}" * depth


ODD = {**GOOD, "eventDataId": "odd-1"}

# Each of these made normalize_fn raise (the whole batch retried forever) before the fix.
HOSTILE_RECORDS = {
    "nested past orjson's encoder": '{"time":"2026-11-01T10:00:00Z","category":"Administrative","properties":'
                                    + nested_list(600) + "}",
    "deep JSON inside a string": orjson.dumps({**ODD, "eventDataId": None, "properties": {
        "requestbody": nested_list(1000)}}).decode(),
    "durationMs inf": orjson.dumps({**ODD, "durationMs": "inf"}).decode(),
    "durationMs 1e400 as text": orjson.dumps({**ODD, "durationMs": "1e400"}).decode(),
    "durationMs past 64 bits": '{"time":"2026-11-01T10:00:00Z","category":"Administrative",'
                               '"durationMs":123456789012345678901234567890}',
    "error code past 64 bits": '{"time":"2026-11-01T10:00:00Z","category":"SignInLogs",'
                               '"resultType":"123456789012345678901234567890"}',
    "time pushed past 9999 by its offset": '{"time":"9999-12-31T23:59:00-05:00","category":"Administrative"}',
    "time pushed before year 1 by its offset": '{"time":"0001-01-01T00:00:00+05:00","category":"Administrative"}',
    "US time pushed past 9999": '{"time":"12/31/9999 11:59:00 PM -05:00","category":"Administrative"}',
    "value chain 900 deep": '{"time":"2026-11-01T10:00:00Z","category":"Administrative","eventDataId":"x",'
                            '"operationName":' + value_chain(900) + "}",
}


@pytest.mark.parametrize("name", list(HOSTILE_RECORDS))
def test_a_hostile_record_is_an_event_or_its_dead_letter_and_the_batch_goes_on(
        name: str, run_normalize: Run, azurite_instance: azurite.Azurite) -> None:
    record = HOSTILE_RECORDS[name].encode()
    body = b'{"records": [' + orjson.dumps(GOOD) + b", " + record + b"]}"
    publisher, container = run_normalize([body, sample("activity/vm-start.json")])
    letters = [letter for _, letter in dead_letters_in(container, azurite_instance.connection_string)]
    events = publisher.hubs["normalized"]
    assert len(events) + len(letters) == 2 + 2, "records in = events out + dead letters"
    assert sum(orjson.loads(event.body)["event_id"] == "e-1" for event in events) == 1, "the good record"
    for letter in letters:
        assert letter["reason"] and letter["record_index"] == 1
        assert orjson.loads(base64.b64decode(letter["original"])) == orjson.loads(record), "re-drivable bytes"
    for event in events:
        assert orjson.loads(event.body)["time"] < "9999"


def test_a_value_chain_gives_its_value_and_a_record_too_deep_to_reencode_keeps_its_event(
        run_normalize: Run) -> None:
    publisher, _ = run_normalize([HOSTILE_RECORDS["value chain 900 deep"].encode()])
    [event] = [orjson.loads(item.body) for item in publisher.hubs["normalized"]]
    assert event["operation"] == "A.B/C/WRITE"
    assert event["raw"] is None and event["details"]["raw_omitted"].startswith("record cannot be re-encoded")


def test_numbers_past_64_bits_or_infinite_are_absent_not_fatal(run_normalize: Run) -> None:
    bodies = [HOSTILE_RECORDS[name].encode() for name in (
        "durationMs inf", "durationMs past 64 bits", "error code past 64 bits")]
    publisher, _ = run_normalize(bodies)
    events = [orjson.loads(item.body) for item in publisher.hubs["normalized"]]
    assert len(events) == 3
    assert all("duration_ms" not in (event["details"] or {}) for event in events[:2])
    assert events[2]["source"] == "signin" and events[2]["result"] is None


def test_a_reason_in_any_script_is_written_and_readable(
        run_normalize: Run, azurite_instance: azurite.Azurite) -> None:
    """A US time in Arabic-Indic digits: its reason holds them, and used to break the blob's metadata."""
    record = {"time": "١٣/٢٥/٢٠٢٦ ٩:٤١:٠٠ AM", "category": "Administrative"}
    publisher, container = run_normalize([orjson.dumps(record)])
    [(blob, letter)] = dead_letters_in(container, azurite_instance.connection_string)
    assert "١٣/٢٥/٢٠٢٦" in letter["reason"], "the body keeps the reason as written"
    assert not publisher.hubs
    properties = BlobServiceClient.from_connection_string(azurite_instance.connection_string) \
        .get_blob_client(container, blob).get_blob_properties()
    assert unquote(properties.metadata["reasons"]) == letter["reason"].split(":", 1)[0]


def test_header_value_escapes_what_a_header_cannot_carry() -> None:
    assert header_value("unrecognized time format; record is not an object") == \
        "unrecognized time format; record is not an object"
    escaped = header_value("invalid time '١٣': x\r\nInjected: 1")
    assert escaped.isascii() and "\r" not in escaped and "\n" not in escaped
    assert unquote(escaped) == "invalid time '١٣': x\r\nInjected: 1"
    assert len(header_value("é" * 5000)) == 1024


# --- the outage / content split: one pure classifier, used by the dead-letter write --------------------

def http_error(status: int) -> HttpResponseError:
    error = HttpResponseError(message=f"status {status}")
    error.status_code = status
    return error


@pytest.mark.parametrize("error", [
    ServiceRequestError("connection refused"), ServiceResponseError("read timed out"), ConnectionError(),
    TimeoutError(), http_error(500), http_error(503), http_error(429), http_error(408), http_error(403),
    http_error(404), http_error(412),
], ids=repr)
def test_outages_raise_so_the_trigger_retries(error: Exception) -> None:
    assert is_outage(error)


@pytest.mark.parametrize("error", [
    http_error(400), http_error(409), http_error(413), http_error(414),
    UnicodeEncodeError("latin-1", "١", 0, 1, "ordinal not in range"), ValueError("invalid metadata"),
    RuntimeError("a bug fails the same way on every retry"),
], ids=repr)
def test_content_refusals_are_not_outages(error: Exception) -> None:
    assert not is_outage(error)


class FakeBlobService(BaseHTTPRequestHandler):
    """A real HTTP server in front of which the real BlobServiceClient runs: it answers each blob PUT
    with the next status of `statuses` (a storage that refuses one blob's content, or is down).
    A fake because Azurite cannot be made to refuse a blob's metadata or to fail on demand."""

    statuses: ClassVar[list[int]] = []
    received: ClassVar[list[dict[str, str]]] = []

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "restype=container" in self.path:
            self._answer(201)
            return
        self.received.append({key.lower(): value for key, value in self.headers.items()
                              if key.lower().startswith("x-ms-meta-")})
        self._answer(self.statuses.pop(0) if self.statuses else 201)

    def _answer(self, status: int) -> None:
        code = {400: "InvalidMetadata", 503: "ServerBusy"}.get(status, "")
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode() \
            if status >= 400 else b""
        self.send_response(status)
        if code:
            self.send_header("x-ms-error-code", code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet: the test reads what it needs from `received`."""


@pytest.fixture
def fake_blob() -> Iterator[BlobDeadLetterStore]:
    FakeBlobService.statuses, FakeBlobService.received = [], []
    server = HTTPServer(("127.0.0.1", 0), FakeBlobService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{DEV_ACCOUNT}"
    service = BlobServiceClient(url, credential={"account_name": DEV_ACCOUNT, "account_key": DEV_KEY},
                                retry_total=0)
    yield BlobDeadLetterStore(service, "deadletters")
    server.shutdown()
    server.server_close()


LETTER = DeadLetter(reason="invalid time: x", partition="0", sequence_number=1, original="e30=")


def test_a_blob_refused_for_its_content_is_written_again_with_only_its_count(
        fake_blob: BlobDeadLetterStore) -> None:
    FakeBlobService.statuses = [400]
    fake_blob.write([LETTER])
    first, second = FakeBlobService.received
    assert set(first) == {"x-ms-meta-count", "x-ms-meta-reasons"}
    assert second == {"x-ms-meta-count": "1"}


def test_letters_refused_even_with_only_their_count_go_in_halves_and_only_the_refused_one_is_logged(
        fake_blob: BlobDeadLetterStore, caplog: pytest.LogCaptureFixture) -> None:
    kept = LETTER.model_copy(update={"sequence_number": 2})
    FakeBlobService.statuses = [400, 400, 400, 400]  # the pair twice, then LETTER alone twice; `kept` is taken
    fake_blob.write([LETTER, kept])  # raises nothing: a refusal that repeats would stall the partition
    assert len(FakeBlobService.received) == 5
    [line] = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert "sequence 1," in line and "invalid time" in line and "e30=" not in line


def test_a_blob_store_that_is_down_raises(fake_blob: BlobDeadLetterStore) -> None:
    FakeBlobService.statuses = [503]
    with pytest.raises(HttpResponseError) as raised:
        fake_blob.write([LETTER])
    assert raised.value.status_code == 503
    assert len(FakeBlobService.received) == 1, "no second write: the trigger's retry does it"


# --- per-body caps --------------------------------------------------------------------------------------

def test_bodies_past_a_cap_are_one_dead_letter_each_with_their_bytes(
        run_normalize: Run, azurite_instance: azurite.Azurite) -> None:
    too_big = b'{"records": [' + orjson.dumps({**GOOD, "pad": "x" * MAX_BODY_BYTES}) + b"]}"
    too_many = orjson.dumps({"records": [GOOD] * (MAX_RECORDS_PER_BODY + 1)})
    too_many_failing = orjson.dumps([GOOD] + [{"time": "never"}] * (MAX_DEAD_LETTERS_PER_BODY + 1))
    just_enough_failing = orjson.dumps([GOOD] + [{"time": "never"}] * MAX_DEAD_LETTERS_PER_BODY)
    bodies = [too_big, too_many, too_many_failing, just_enough_failing]
    publisher, container = run_normalize(bodies)
    letters = [letter for _, letter in dead_letters_in(container, azurite_instance.connection_string)]
    whole = {letter["sequence_number"]: letter for letter in letters if letter["record_index"] is None}
    assert sorted(whole) == [100, 101, 102]
    assert whole[100]["reason"] == f"body too large: {len(too_big)} bytes, more than {MAX_BODY_BYTES}"
    assert whole[101]["reason"] == f"too many records: {MAX_RECORDS_PER_BODY + 1} in one body, more than " \
                                   f"{MAX_RECORDS_PER_BODY}"
    assert whole[102]["reason"].startswith(f"too many dead letters: more than {MAX_DEAD_LETTERS_PER_BODY} of")
    for sequence, body in zip((100, 101, 102), bodies, strict=False):
        assert base64.b64decode(whole[sequence]["original"]) == body
    assert len(letters) == 3 + MAX_DEAD_LETTERS_PER_BODY
    assert len(publisher.hubs["normalized"]) == 1, "only the body under every cap publishes its good record"


# Run in a child with an address-space limit, so that a regression fails this test, not the machine.
DEGENERATE_BATCH = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import orjson
from shared.clients import wiring
from shared.clients.eventhubs import trigger_batch
from tests.conftest import indexed_functions

MB = 1_000_000
record = {"time": "never", "category": "Administrative"}
def deep(depth): return "[" * depth + "]" * depth
shapes = [
    b"[" + b"0," * (MB // 2 - 1) + b"0]",                                    # half a million records
    ("[" + ",".join([deep(1000)] * (MB // 2000)) + "]").encode(),            # deep nesting
    orjson.dumps([{"time": "2026-11-01T10:00:00Z", "category": "Administrative", "x": "y" * (MB - 100)}]),
    orjson.dumps([{**record, "pad": "p" * 150}] * (MB // 200)),               # small failing records
    orjson.dumps([{"a": deep(400)}] * (MB // 820)),                          # records past orjson's encoder
]
bodies = [shapes[index % len(shapes)] for index in range(100)]
indexed_functions()["normalize"].get_user_function()(trigger_batch(bodies, "0"))
published = len(wiring.publisher().hubs.get("normalized", []))
print(published, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_a_batch_of_degenerate_megabyte_bodies_stays_far_under_two_gib(azurite_instance: azurite.Azurite) -> None:
    env = {"PATH": "/usr/bin:/bin", "STORMWATCH_STORAGE_CONNECTION_STRING": azurite_instance.connection_string,
           "STORMWATCH_PUBLISHER": "memory", "STORMWATCH_DEADLETTER_CONTAINER": "degenerate"}
    completed = subprocess.run([sys.executable, "-c", DEGENERATE_BATCH], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    published, peak = map(int, completed.stdout.split())
    assert published == 20, "the huge-string bodies still publish their event"
    assert peak < 1 << 30, f"peak resident memory {peak / 2**20:.0f} MiB"
