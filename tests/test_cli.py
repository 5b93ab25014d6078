"""`python -m shared normalize` as a user runs it: a real subprocess, stdout/stderr contracts, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from shared.normalized_event import DeadLetter, NormalizedEvent
from tests.conftest import REPO, SAMPLES, sample


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "shared", *args], input=stdin, capture_output=True,
                          cwd=REPO, timeout=120, check=False)


def test_events_on_stdout_dead_letters_on_stderr() -> None:
    done = run_cli("normalize", str(SAMPLES / "activity/nsg-rule-write.json"), str(SAMPLES / "bad/mixed.json"))
    assert done.returncode == 0
    events = [NormalizedEvent.model_validate_json(line) for line in done.stdout.splitlines()]
    assert len(events) == 3 + 1
    letters = [DeadLetter.model_validate_json(line) for line in done.stderr.splitlines()]
    assert [letter.reason for letter in letters] == [
        "record is not an object but a number", "record is not an object but a string",
        "record is not an object but null"]


def test_stdin_json_lines_each_line_a_body(tmp_path: Path) -> None:
    lines = b"\n".join([
        orjson.dumps(orjson.loads(sample("signin/signin-failure.json"))),
        b"{not json",
        orjson.dumps(orjson.loads(sample("audit/user-created.json"))),
    ]) + b"\n"
    done = run_cli("normalize", stdin=lines)
    assert done.returncode == 0
    assert [orjson.loads(line)["source"] for line in done.stdout.splitlines()] == ["signin", "audit"]
    letter = orjson.loads(done.stderr)
    assert letter["sequence_number"] == 1 and letter["reason"].startswith("body is not valid JSON")


def test_a_users_own_az_output_is_read_as_written() -> None:
    """`az monitor activity-log list > mine.json` writes a pretty JSON array; `az rest` on Graph a page."""
    done = run_cli("normalize", "--no-raw", str(SAMPLES / "rest/activity-log-list.json"),
                   str(SAMPLES / "graph/signins.json"))
    assert (done.returncode, done.stderr) == (0, b"")
    assert [orjson.loads(line)["source"] for line in done.stdout.splitlines()] == [
        "activity", "activity", "activity", "defender", "signin", "signin"]


def test_raw_can_be_left_out() -> None:
    done = run_cli("normalize", "--no-raw", str(SAMPLES / "activity/vm-start.json"))
    assert all(orjson.loads(line)["raw"] is None for line in done.stdout.splitlines())
    done = run_cli("normalize", str(SAMPLES / "activity/vm-start.json"))
    assert all(orjson.loads(line)["raw"] for line in done.stdout.splitlines())


def test_unusable_arguments_exit_non_zero_with_a_clear_message() -> None:
    done = run_cli("normalize", "no/such/file.json")
    assert done.returncode == 2
    assert b"not a readable file: no/such/file.json" in done.stderr
    assert not done.stdout
    assert run_cli("no-such-command").returncode == 2
