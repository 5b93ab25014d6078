"""Command line: run the pipeline's code paths locally, without the Functions host.

stdout carries only results (one JSON object per line) so it can be piped; messages go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NoReturn

import orjson
from azure.core.exceptions import AzureError

from shared import __version__
from shared.cli.alert_commands import add_commands as add_alert_commands
from shared.cli.azurite import add_azurite_port, ports_from, stop_dev_instance
from shared.cli.deadletter_commands import add_deadletter_commands
from shared.cli.demo import run_demo
from shared.cli.detect_commands import add_commands as add_detect_commands
from shared.cli.enrich_commands import add_commands as add_enrich_commands
from shared.cli.local_storage import I_MEAN_IT
from shared.cli.usage import UsageError, first_line
from shared.clients.eventhubs import Position
from shared.normalize.batch import normalize_bodies
from shared.settings import SettingsError
from shared.worker_memory import keep_freed_memory

__all__ = ["UsageError", "build_parser", "main", "read_bodies"]  # the command modules import these


_BOM = b"\xef\xbb\xbf"


def read_bodies(stream: BinaryIO) -> Iterator[bytes]:
    """A file holds one JSON body, or JSON Lines of bodies (one body per non-empty line).

    A file is JSON Lines when it does not parse as one document, has more than one non-empty line and
    at least one of them is a JSON object or array on its own: then every line is its own body, and a
    malformed line (the first one included) is its own dead letter without hiding the others. Anything
    else is one body (a truncated pretty-printed file is one dead letter, not one per line).
    """
    data = stream.read()
    content = data.removeprefix(_BOM)  # a BOM belongs to the file, not to its first line
    if not content.strip():
        return
    lines = [line for line in content.splitlines() if line.strip()]
    if len(lines) > 1 and not _parses(content) and any(_is_container(line) for line in lines):
        yield from lines
    else:
        yield data


def _parses(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _is_container(line: bytes) -> bool:
    stripped = line.strip()
    return stripped[:1] in (b"{", b"[") and _parses(stripped)


def _open_inputs(paths: Sequence[str]) -> Iterator[tuple[str, BinaryIO]]:
    if not paths:
        yield "<stdin>", sys.stdin.buffer
        return
    for path in paths:
        file = Path(path)
        if not file.is_file():
            raise UsageError(f"not a readable file: {path}")
        with file.open("rb") as stream:
            yield path, stream


def cmd_normalize(args: argparse.Namespace) -> int:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for name, stream in _open_inputs(args.files):
        bodies = [(body, Position(partition=name, sequence_number=index))
                  for index, body in enumerate(read_bodies(stream))]
        result = normalize_bodies(bodies, include_raw=not args.no_raw)
        for output in result.events:
            out.write(output.body + b"\n")
        for letter in result.dead_letters:
            err.write(orjson.dumps(letter.model_dump(mode="json")) + b"\n")
    out.flush()
    return 0


class OneLineParser(argparse.ArgumentParser):
    """Unusable arguments are one line on stderr and exit status 2, like every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = OneLineParser(prog="python -m shared", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stormwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    normalize = commands.add_parser(
        "normalize", help="normalize Event Hub bodies: events on stdout, dead letters on stderr")
    normalize.add_argument("files", nargs="*", help="JSON body or JSON Lines of bodies (default: stdin)")
    normalize.add_argument("--no-raw", action="store_true", help="leave the original record out")
    normalize.set_defaults(run=cmd_normalize)
    demo = commands.add_parser("demo", help="run the bundled samples through the pipeline (make demo)")
    demo.add_argument("--data", default=".demo", help="folder for Azurite's data and logs")
    add_azurite_port(demo)
    demo.add_argument(I_MEAN_IT, action="store_true", dest="i_mean_it",
                      help="run even when the configured storage account is not the local emulator "
                           "(the demo empties its alerts, detectionstate and inventory tables)")
    demo.set_defaults(run=lambda args: run_demo(Path(args.data), ports_from(args.azurite_port), args.i_mean_it))
    azurite_command = commands.add_parser("azurite", help="stop the demo's Azurite")
    azurite_command.add_argument("action", choices=["stop"])
    azurite_command.add_argument("--data", default=".demo/azurite")
    azurite_command.set_defaults(run=cmd_azurite)
    add_deadletter_commands(commands)
    add_enrich_commands(commands)
    add_detect_commands(commands)
    add_alert_commands(commands)
    return parser


def cmd_azurite(args: argparse.Namespace) -> int:
    stopped = stop_dev_instance(Path(args.data))
    print("Azurite stopped" if stopped else "no demo Azurite was running", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the Functions worker does (normalize_fn), so local runs behave the same
    try:
        code: int = args.run(args)
    except BrokenPipeError:
        return 0
    except (UsageError, SettingsError) as error:
        return _failed(args.command, str(error))
    except AzureError as error:
        return _failed(args.command, f"storage refused or could not be reached: {first_line(error)}")
    except OSError as error:  # a file, a port, a connection: the system's reason is the message
        return _failed(args.command, first_line(error))
    return code


def _failed(command: str, message: str) -> int:
    print(f"python -m shared {command}: {message}", file=sys.stderr)
    return 2
