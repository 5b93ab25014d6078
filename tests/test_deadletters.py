"""Dead-letter operations against a real Blob store (Azurite): list, show, re-drive after a mapper fix,
idempotent re-drive, and redelivery that keeps the re-drive marks."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

import shared.normalize.batch
from shared.cli import azurite
from shared.cli.deadletter_commands import redrive
from shared.clients import wiring
from shared.clients.dead_letters import BlobDeadLetterStore
from shared.clients.eventhubs import bodies_with_positions, trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.clients.storage import blob_service
from shared.normalize.batch import process_batch
from shared.normalize.mappers import MappingError, map_record
from shared.settings import get_settings
from tests.conftest import REPO, sample

ENQUEUED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
REDRIVEN = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


@pytest.fixture
def store(app_env: pytest.MonkeyPatch) -> Iterator[BlobDeadLetterStore]:
    app_env.setenv("STORMWATCH_DEADLETTER_CONTAINER", f"dl-{uuid.uuid4().hex[:12]}")
    wiring.reset()
    settings = get_settings()
    yield BlobDeadLetterStore(blob_service(settings), settings.deadletter_container)


def normalize_with_a_broken_sign_in_mapper(monkeypatch: pytest.MonkeyPatch, store: BlobDeadLetterStore) -> None:
    """Simulate a mapper bug: every sign-in record fails; the batch still completes."""
    def broken(record: object) -> dict[str, object]:
        event = map_record(record)
        if event["source"] == "signin":
            raise MappingError("signin mapper bug")
        return event

    with monkeypatch.context() as patch:
        patch.setattr(shared.normalize.batch, "map_record", broken)
        events = trigger_batch([sample("signin/noninteractive.json"), sample("activity/vm-start.json")], "3", 40,
                               ENQUEUED)
        process_batch(bodies_with_positions(events), InProcessPublisher(), store, get_settings())


def test_redrive_after_a_fix_publishes_once_and_marks_the_letters(
        store: BlobDeadLetterStore, app_env: pytest.MonkeyPatch) -> None:
    normalize_with_a_broken_sign_in_mapper(app_env, store)
    letters = list(store.letters())
    assert [(item.letter.sequence_number, item.letter.record_index) for item in letters] == [(40, 0), (40, 1)]
    assert all(item.letter.reason == "signin mapper bug" for item in letters)

    publisher = InProcessPublisher()
    outcomes = redrive(store, store.letters(), publisher, get_settings(), REDRIVEN)
    assert [outcome.events for outcome in outcomes] == [1, 1]
    assert [orjson.loads(event.body)["source"] for event in publisher.hubs["normalized"]] == ["signin", "signin"]
    assert {item.letter.redriven_at for item in store.letters()} == {REDRIVEN}

    again = InProcessPublisher()
    outcomes = redrive(store, store.letters(), again, get_settings(), REDRIVEN)
    assert all(outcome.already_redriven for outcome in outcomes)
    assert not again.hubs, "a second re-drive publishes nothing"


def test_a_letter_that_still_fails_stays_unmarked_with_its_new_reason(store: BlobDeadLetterStore) -> None:
    events = trigger_batch([sample("bad/mixed.json")], "5", 7, ENQUEUED)
    process_batch(bodies_with_positions(events), InProcessPublisher(), store, get_settings())
    publisher = InProcessPublisher()
    outcomes = redrive(store, store.letters(), publisher, get_settings(), REDRIVEN)
    assert [outcome.still_dead for outcome in outcomes] == [
        "body is neither an object nor an array but a number", "body is neither an object nor an array but a string",
        "body is neither an object nor an array but null"]
    assert not publisher.hubs
    assert all(item.letter.redriven_at is None for item in store.letters())


def test_redelivery_of_the_batch_keeps_the_redrive_marks(
        store: BlobDeadLetterStore, app_env: pytest.MonkeyPatch) -> None:
    normalize_with_a_broken_sign_in_mapper(app_env, store)
    redrive(store, store.letters(), InProcessPublisher(), get_settings(), REDRIVEN)
    normalize_with_a_broken_sign_in_mapper(app_env, store)  # the same batch arrives again
    assert [item.letter.redriven_at for item in store.letters()] == [REDRIVEN, REDRIVEN]


def run_cli(*args: str, connection_string: str, container: str) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": "/usr/bin:/bin", "STORMWATCH_STORAGE_CONNECTION_STRING": connection_string,
           "STORMWATCH_DEADLETTER_CONTAINER": container}
    return subprocess.run([sys.executable, "-m", "shared", "deadletters", *args], capture_output=True, cwd=REPO,
                          env=env, timeout=120, check=False)


def test_cli_lists_shows_and_redrives(store: BlobDeadLetterStore, app_env: pytest.MonkeyPatch,
                                      azurite_instance: azurite.Azurite) -> None:
    normalize_with_a_broken_sign_in_mapper(app_env, store)
    where = {"connection_string": azurite_instance.connection_string,
             "container": get_settings().deadletter_container}
    listed = run_cli("list", "--reason", "mapper bug", **where)
    assert listed.returncode == 0
    ids = [line.split("\t")[0] for line in listed.stdout.decode().splitlines()]
    assert len(ids) == 2 and all("#" in letter_id for letter_id in ids)

    shown = orjson.loads(run_cli("show", ids[0], **where).stdout)
    assert shown["original"]["category"] == "NonInteractiveUserSignInLogs"

    redriven = run_cli("redrive", ids[0], **where)
    assert redriven.returncode == 0, redriven.stderr
    assert b"re-driven: 1 event(s) published" in redriven.stderr
    assert orjson.loads(redriven.stdout.splitlines()[0])["source"] == "signin"
    assert b"already re-driven" in run_cli("redrive", ids[0], **where).stderr
    assert b"re-driven" in run_cli("list", **where).stdout

    missing = run_cli("show", "no/such.jsonl#1", **where)
    assert missing.returncode == 2 and b"no dead letter" in missing.stderr
    assert run_cli("redrive", **where).returncode == 2
