"""Dead-letter operations: `python -m shared deadletters list | show | redrive`.

After a mapper fix, an operator re-drives dead letters through the same normalize code and fan-out as
the function. A re-driven letter is marked (`redriven_at`) in its blob, so running the same re-drive
again publishes nothing twice; a letter that still fails stays as it was, with its new reason shown.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import NamedTuple

import orjson
from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.cli.local_storage import local_settings
from shared.cli.usage import UsageError, first_line
from shared.clients import wiring
from shared.clients.dead_letters import BlobDeadLetterStore, StoredLetter
from shared.clients.eventhubs import Position
from shared.clients.publisher import InProcessPublisher, Publisher
from shared.clients.storage import blob_service
from shared.normalize.batch import normalize_bodies, publish_events
from shared.settings import Settings, get_settings


class RedriveOutcome(NamedTuple):
    id: str
    events: int
    still_dead: str | None  # the reason it fails now; None when it went through
    already_redriven: bool = False


def redrive(store: BlobDeadLetterStore, letters: Iterable[StoredLetter], publisher: Publisher,
            settings: Settings, now: datetime) -> list[RedriveOutcome]:
    """Normalize each letter's original bytes again; publish and mark the ones that now go through."""
    outcomes: list[RedriveOutcome] = []
    succeeded: list[str] = []
    for stored in letters:
        letter = stored.letter
        if letter.redriven_at is not None:
            outcomes.append(RedriveOutcome(stored.id, 0, None, already_redriven=True))
            continue
        position = Position(letter.partition, letter.sequence_number, letter.offset, letter.enqueued_time)
        result = normalize_bodies([(base64.b64decode(letter.original), position)], settings.include_raw)
        if result.dead_letters:
            outcomes.append(RedriveOutcome(stored.id, 0, result.dead_letters[0].reason))
            continue
        publish_events(result.events, publisher, settings)
        succeeded.append(stored.id)
        outcomes.append(RedriveOutcome(stored.id, len(result.events), None))
    if succeeded:
        store.mark_redriven(succeeded, now)
    return outcomes


def _store() -> BlobDeadLetterStore:
    """The configured storage account, else Azurite's development account (a local run), tried once
    with short timeouts: a person is waiting, and a store that is down is said so at once."""
    settings = local_settings(get_settings())
    return BlobDeadLetterStore(blob_service(settings, quick=True), settings.deadletter_container)


def _reporting_storage_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """One clear line instead of a traceback when the dead-letter store cannot be reached."""
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ResourceNotFoundError:
            print(f"deadletters: no container '{get_settings().deadletter_container}' yet: nothing was "
                  "dead-lettered", file=sys.stderr)
            return 0
        except AzureError as error:
            print(f"deadletters: cannot use the dead-letter store: {first_line(error)}", file=sys.stderr)
            return 2
        except ValueError as error:  # a blob in the container that does not hold dead letters
            print(f"deadletters: the container holds a blob that is not dead letters: {first_line(error)}",
                  file=sys.stderr)
            return 2
    return run


_LETTER_ID = re.compile(r"^[^#\x00-\x1f]+#[1-9][0-9]{0,8}$")


def _get(store: BlobDeadLetterStore, letter_id: str) -> StoredLetter:
    if not _LETTER_ID.match(letter_id):
        raise UsageError(f"{letter_id!r} is not a dead letter id: ids are <blob name>#<line>, "
                         "as `deadletters list` and the demo print them")
    try:
        return store.get(letter_id)
    except (KeyError, ResourceNotFoundError):
        raise UsageError(f"no dead letter {letter_id!r}: ids look like `list` prints them") from None


def _selected(store: BlobDeadLetterStore, args: argparse.Namespace) -> list[StoredLetter]:
    if getattr(args, "ids", None):
        return [_get(store, letter_id) for letter_id in args.ids]
    return [stored for stored in store.letters(args.prefix)
            if args.reason is None or args.reason.lower() in stored.letter.reason.lower()]


def cmd_list(args: argparse.Namespace) -> int:
    for stored in _selected(_store(), args):
        letter = stored.letter
        where = "whole body" if letter.record_index is None else f"record {letter.record_index}"
        mark = f" [re-driven {letter.redriven_at:%Y-%m-%dT%H:%M:%SZ}]" if letter.redriven_at else ""
        print(f"{stored.id}\tpartition {letter.partition} seq {letter.sequence_number} {where}\t"
              f"{letter.reason}{mark}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    stored = _get(_store(), args.id)
    shown = stored.letter.model_dump(mode="json")
    original = base64.b64decode(stored.letter.original)
    try:
        shown["original"] = orjson.loads(original)
    except orjson.JSONDecodeError:
        shown["original"] = original.decode("utf-8", errors="replace")
    sys.stdout.buffer.write(orjson.dumps({"id": stored.id, **shown}, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    if not (args.ids or args.reason or args.prefix or args.all):
        raise UsageError("name letter ids, or select with --reason, --prefix or --all")
    store, publisher = _store(), wiring.publisher()
    outcomes = redrive(store, _selected(store, args), publisher, get_settings(), datetime.now(UTC))
    for outcome in outcomes:
        if outcome.already_redriven:
            status = "already re-driven: skipped"
        elif outcome.still_dead:
            status = f"still fails: {outcome.still_dead}"
        else:
            status = f"re-driven: {outcome.events} event(s) published"
        print(f"{outcome.id}\t{status}", file=sys.stderr)
    if isinstance(publisher, InProcessPublisher):  # local run: show what would have been published
        for event in publisher.hubs.get(get_settings().normalized_hub, []):
            sys.stdout.buffer.write(event.body + b"\n")
    return 0


def add_deadletter_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("deadletters", help="list, show and re-drive dead letters")
    actions = group.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="one line per dead letter: id, position, reason")
    show = actions.add_parser("show", help="one dead letter with its original record decoded")
    show.add_argument("id")
    show.set_defaults(run=_reporting_storage_errors(cmd_show))
    again = actions.add_parser("redrive", help="normalize again and publish what now goes through")
    again.add_argument("ids", nargs="*", help="letter ids as `list` prints them")
    again.add_argument("--all", action="store_true", help="every letter not yet re-driven")
    for action, run in ((listing, cmd_list), (again, cmd_redrive)):
        action.add_argument("--reason", help="only letters whose reason contains this text")
        action.add_argument("--prefix", help="only blobs under this prefix, e.g. a day: 2026/11/20")
        action.set_defaults(run=_reporting_storage_errors(run))
