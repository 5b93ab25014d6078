"""The command line's inputs behave like the pipeline: each JSON Lines line is its own body (whatever
line is bad), `normalize` keeps records in = events out + dead letters on hostile input, and `replay`
writes its dead letters to the Blob store normalize_fn uses, where `deadletters list` finds them."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import uuid

import orjson
import pytest

from shared.cli import azurite
from shared.cli.main import read_bodies
from tests.conftest import REPO, SAMPLES, sample
from tests.detect_fixtures import Tables, tables
from tests.test_deadletters import run_cli as deadletters_cli
from tests.test_detect import replay
from tests.test_poison import HOSTILE_RECORDS

__all__ = ["tables"]  # the fixture, used by name

SIGNIN = orjson.dumps(orjson.loads(sample("signin/signin-failure.json")))
AUDIT = orjson.dumps(orjson.loads(sample("audit/user-created.json")))


def bodies_of(data: bytes) -> list[bytes]:
    return list(read_bodies(io.BytesIO(data)))


@pytest.mark.parametrize("lines", [
    [b"{not json", SIGNIN, AUDIT],
    [SIGNIN, b"{not json", AUDIT],
    [b'"a string"', b"42", SIGNIN],
    [b"\xff\xfe garbage", SIGNIN, b"", AUDIT],
], ids=["first bad", "middle bad", "first lines valid JSON but no body", "invalid UTF-8 and a blank line"])
def test_each_json_lines_line_is_its_own_body_whichever_is_bad(lines: list[bytes]) -> None:
    assert bodies_of(b"\n".join(lines) + b"\n") == [line for line in lines if line]


def test_a_bom_belongs_to_the_file_not_to_its_first_line() -> None:
    assert bodies_of(b"\xef\xbb\xbf{not json\r\n" + SIGNIN + b"\r\n") == [b"{not json", SIGNIN]
    one_document = b"\xef\xbb\xbf" + sample("activity/vm-start.json")
    assert bodies_of(one_document) == [one_document], "one document keeps its bytes, BOM and all"


def test_one_document_or_a_truncated_pretty_printed_one_is_one_body() -> None:
    assert bodies_of(sample("activity/vm-start.json")) == [sample("activity/vm-start.json")]
    assert bodies_of(sample("bad/truncated.json")) == [sample("bad/truncated.json")]
    assert bodies_of(b"  \n\n") == []


def run_normalize(data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "shared", "normalize"], input=data, capture_output=True,
                          cwd=REPO, timeout=120, check=False)


def test_normalize_keeps_records_in_equal_events_out_plus_dead_letters_on_hostile_lines() -> None:
    """Every hostile record of issue 14 on its own line, with a bad first line and a good last one."""
    lines = [b"{not json", *(record.encode() for record in HOSTILE_RECORDS.values()), SIGNIN]
    done = run_normalize(b"\n".join(lines) + b"\n")
    assert done.returncode == 0, done.stderr[-2000:]
    events, letters = done.stdout.splitlines(), [orjson.loads(line) for line in done.stderr.splitlines()]
    assert len(events) + len(letters) == len(lines)
    assert base64.b64decode(letters[0]["original"]) == b"{not json"
    assert orjson.loads(events[-1])["source"] == "signin"


def test_replay_writes_dead_letters_where_deadletters_list_finds_them(
        tables: Tables, azurite_instance: azurite.Azurite) -> None:
    container = f"dl-{uuid.uuid4().hex[:12]}"
    done = replay(str(SAMPLES / "bad/mixed.json"), connection_string=azurite_instance.connection_string,
                  tables=tables, extra={"STORMWATCH_DEADLETTER_CONTAINER": container})
    assert done.returncode == 0, done.stderr
    assert "(3 dead letters)" in done.stderr
    listed = deadletters_cli("list", connection_string=azurite_instance.connection_string, container=container)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.decode().splitlines()
    assert len(rows) == 3
    assert sum("record is not an object" in row for row in rows) == 3
