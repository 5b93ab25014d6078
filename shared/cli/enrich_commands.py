"""Commands of the enrichment side: `serve` (the HTTP functions locally) and `catalog sync`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.cli.azurite import add_azurite_port, ports_from
from shared.cli.local_storage import default_to_local_storage
from shared.cli.serve import serve
from shared.cli.usage import port_number
from shared.clients.arm import ArmError, arm_client
from shared.normalize.catalog import OPERATIONS_FILE
from shared.normalize.catalog_sync import sync
from shared.settings import SettingsError, get_settings


def cmd_serve(args: argparse.Namespace) -> int:
    default_to_local_storage(ports_from(args.azurite_port))  # as replay and deadletters do
    return serve(args.port, quiet=args.quiet)


def cmd_catalog_sync(args: argparse.Namespace) -> int:
    try:
        kept, added = sync(arm_client(get_settings()), args.file)
    except (ArmError, SettingsError) as error:
        print(f"python -m shared catalog sync: {getattr(error, 'message', error)}", file=sys.stderr)
        return 2
    print(f"operation catalog: {kept} entries kept, {added} added from ARM", file=sys.stderr)
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_command = commands.add_parser(
        "serve", help="serve the app's HTTP functions on 127.0.0.1 (as `func start` would, without keys)")
    serve_command.add_argument("--port", type=port_number, default=7071, help="0 picks a free port (default 7071)")
    serve_command.add_argument("--quiet", action="store_true", help="no request log on stderr")
    add_azurite_port(serve_command)
    serve_command.set_defaults(run=cmd_serve)
    catalog = commands.add_parser("catalog", help="the operation catalog (shared/normalize/data/operations.json)")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    sync_command = catalog_commands.add_parser(
        "sync", help="add every ARM provider's operations (needs an Azure login or managed identity)")
    sync_command.add_argument("--file", type=Path, default=OPERATIONS_FILE,
                              help="catalog file (default: the bundled one)")
    sync_command.set_defaults(run=cmd_catalog_sync)
