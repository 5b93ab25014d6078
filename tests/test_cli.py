"""`python -m shared normalize` as a user runs it: a real subprocess, stdout/stderr contracts, exit codes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import orjson
import pytest
from azure.data.tables import TableServiceClient

from shared.cli import azurite
from shared.cli.local_storage import default_to_local_storage, is_emulator, local_settings
from shared.clients import wiring
from shared.clients.storage import DEV_ACCOUNT, DEV_CONNECTION_STRING, DEV_KEY, emulator_connection_string
from shared.normalized_event import DeadLetter, NormalizedEvent
from shared.settings import Settings, get_settings
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


# --- local tooling that cannot hurt data, and errors in one line --------------------------------------

PRODUCTION = ("DefaultEndpointsProtocol=https;AccountName=prodlogs;AccountKey=bm90LWEta2V5;"
              "EndpointSuffix=core.windows.net")


def run_with(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("STORMWATCH_")}
    return subprocess.run([sys.executable, "-m", "shared", *args], capture_output=True, text=True, cwd=REPO,
                          env=inherited | env, timeout=timeout, check=False)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize(("settings", "emulator"), [
    (Settings(storage_connection_string="UseDevelopmentStorage=true"), True),
    (Settings(storage_connection_string=emulator_connection_string({"blob": 1, "queue": 2, "table": 3})), True),
    (Settings(storage_connection_string=emulator_connection_string({"blob": 1, "queue": 2, "table": 3},
                                                                   host="localhost")), True),
    (local_settings(Settings()), True),
    (Settings(storage_connection_string=PRODUCTION), False),
    (Settings(storage_connection_string=DEV_CONNECTION_STRING.replace("127.0.0.1:10002", "10.0.0.5:10002")), False),
    (Settings(storage_connection_string=DEV_CONNECTION_STRING.replace("devstoreaccount1;", "prodlogs;", 1)), False),
    (Settings(storage_connection_string="AccountName=devstoreaccount1;TableEndpoint=http://127.0.0.1:1/x"), False),
    (Settings(table_endpoint="https://prodlogs.table.core.windows.net"), False),
    (local_settings(Settings(blob_endpoint="https://prodlogs.blob.core.windows.net")), False),
])
def test_only_the_emulator_counts_as_local(settings: Settings, emulator: bool) -> None:
    assert is_emulator(settings) is emulator


def test_demo_refuses_a_real_account_before_touching_anything(tmp_path: Path) -> None:
    done = run_with({"STORMWATCH_STORAGE_CONNECTION_STRING": PRODUCTION}, "demo", "--data", str(tmp_path))
    assert "not the local emulator" in one_line_error(done) and "--i-mean-it" in done.stderr
    assert not any(tmp_path.iterdir())  # no Azurite started, nothing written


def test_replay_fresh_empties_only_the_emulator_unless_told(azurite_instance: azurite.Azurite) -> None:
    # Table storage the guard cannot prove is the emulator (no blob endpoint); here it is the test's Azurite.
    table = emulator_connection_string(azurite_instance.ports).split("TableEndpoint=")[1].rstrip(";")
    unproven = f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};TableEndpoint={table}"
    suffix = uuid.uuid4().hex[:10]
    env = {"STORMWATCH_STORAGE_CONNECTION_STRING": unproven, "STORMWATCH_STATE_TABLE": f"state{suffix}",
           "STORMWATCH_ALERTS_TABLE": f"alerts{suffix}", "STORMWATCH_INVENTORY_TABLE": f"inventory{suffix}"}
    spike = str(SAMPLES / "attack/delete-spike.json")
    assert run_with(env, "replay", spike).returncode == 0
    refused = run_with(env, "replay", "--fresh", spike)
    assert "replay --fresh would empty tables" in one_line_error(refused)
    alerts = TableServiceClient.from_connection_string(unproven).get_table_client(f"alerts{suffix}")
    assert len(list(alerts.list_entities())) == 3  # untouched (the spike, the key vault, the workspace)
    told = run_with(env, "replay", "--fresh", "--i-mean-it", spike)
    assert told.returncode == 0 and "--fresh: removed" in told.stderr
    assert len(told.stdout.splitlines()) == 3  # emptied, so the three alerts are new again


def test_demo_never_uses_a_port_something_else_listens_on(tmp_path: Path) -> None:
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        done = run_with({}, "demo", "--data", str(tmp_path), "--azurite-port", str(port - 2))
    message = one_line_error(done)
    assert f"port {port} of 127.0.0.1 is in use by a process the demo did not start" in message
    assert "AZURITE_PORT=" in message and not (tmp_path / "azurite" / "azurite.pid").exists()


@pytest.mark.parametrize("args", [
    ["serve", "--port", "99999"], ["serve", "--port", "-1"], ["demo", "--azurite-port", "65534"],
    ["deadletters", "show", "2026/11/26/0/0-0-0123456789abcdef.jsonl"], ["deadletters", "show", "x#0"],
    ["deadletters"], ["replay", "--rules"], ["normalize", "--unknown"], ["no-such-command"],
])
def test_unusable_arguments_are_one_line_with_exit_2(args: list[str]) -> None:
    assert one_line_error(run_with({}, *args)).startswith("python -m shared")


def test_serve_on_a_taken_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = one_line_error(run_with({}, "serve", "--port", str(port)))
    assert message == f"python -m shared serve: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_deadletters_says_at_once_that_storage_is_down() -> None:
    """A store that accepts connections and drops them: one attempt, then one line (no 15 s of retries)."""
    attempts: list[socket.socket] = []
    with socket.socket() as down:
        down.bind(("127.0.0.1", 0))
        down.listen()
        port = down.getsockname()[1]

        def drop() -> None:
            while True:
                try:
                    connection, _ = down.accept()
                except OSError:
                    return
                attempts.append(connection)
                connection.close()

        threading.Thread(target=drop, daemon=True).start()
        done = run_with({"STORMWATCH_STORAGE_CONNECTION_STRING": emulator_connection_string(
            {"blob": port, "queue": port, "table": port})}, "deadletters", "list")
    assert one_line_error(done).startswith("deadletters: cannot use the dead-letter store")
    assert len(attempts) == 1


def test_serve_uses_the_same_default_storage_as_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORMWATCH_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("STORMWATCH_TABLE_ENDPOINT", raising=False)
    monkeypatch.delenv("STORMWATCH_BLOB_ENDPOINT", raising=False)
    wiring.reset()
    default_to_local_storage(azurite.ports_from(20000))
    try:
        assert get_settings() == local_settings(Settings.from_env({}), azurite.ports_from(20000))
        assert get_settings().storage_connection_string == emulator_connection_string(
            {"blob": 20000, "queue": 20001, "table": 20002})
        monkeypatch.setenv("STORMWATCH_STORAGE_CONNECTION_STRING", PRODUCTION)
        wiring.reset()
        default_to_local_storage()
        assert get_settings().storage_connection_string == PRODUCTION  # configured: left as it is
    finally:
        monkeypatch.delenv("STORMWATCH_STORAGE_CONNECTION_STRING", raising=False)
        wiring.reset()
