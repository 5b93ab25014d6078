"""`python -m shared replay ...` and `python -m shared rules test ...` (registered by shared.cli.main).

replay: stdout carries one JSON alert per line — only alerts that are new — and nothing else;
progress, rule load errors and the summary go to stderr. rules test: a report per rule on stdout.
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import sys
from pathlib import Path

from azure.core.exceptions import AzureError, ServiceRequestError

from shared.cli.local_storage import I_MEAN_IT, local_settings, refuse_unless_emulator
from shared.cli.replay import (
    LocalDetector,
    ReplayResult,
    deliver_through_routes,
    local_detector,
    partition_for,
    replay_bodies,
)
from shared.cli.rule_tests import in_memory_detector, run_cases
from shared.cli.usage import first_line
from shared.clients.storage import table_service
from shared.delivery.outbox import Outbox
from shared.detect.engine import RULES_DIR
from shared.detect.rules.convert import convert_text, is_old_format
from shared.detect.rules.loader import LISTS_FOLDER, ROUTES_FILE, RulePack, load_rules, read_documents, rule_files
from shared.settings import Settings, env_name, get_settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser(
        "replay", help="normalize then detect Event Hub bodies with state in Table Storage (Azurite by default); "
                       "new alerts as JSON lines on stdout")
    replay.add_argument("files", nargs="*", help="JSON body or JSON Lines of bodies per file (default: stdin); "
                                                 "one partition per file, sequence number = position")
    replay.add_argument("--rules", help="rules folder (default: STORMWATCH_RULES_DIR, else rules/)")
    replay.add_argument("--fresh", action="store_true", help="empty the state, alerts and inventory tables first "
                                                             f"(the local emulator only, unless {I_MEAN_IT})")
    replay.add_argument("--no-delivery", action="store_true",
                        help="do not send the new alerts through the rules folder's routes.yaml")
    replay.add_argument(I_MEAN_IT, action="store_true", dest="i_mean_it",
                        help="let --fresh empty the tables of an account that is not the local emulator")
    replay.set_defaults(run=cmd_replay)
    rules = commands.add_parser("rules", help="work with detection rule files")
    actions = rules.add_subparsers(dest="rules_command", required=True)
    test = actions.add_parser("test", help="run every rule's embedded test events; pass/fail per rule")
    test.add_argument("directory", nargs="?", help="rules folder (default: STORMWATCH_RULES_DIR, else rules/)")
    test.set_defaults(run=cmd_rules_test)
    convert = actions.add_parser("convert", help="rewrite rules of the old format (kind: match/threshold/distinct/"
                                                 "first_seen) as Sigma documents into a new folder")
    convert.add_argument("source", help="rules folder in the old format (its lists/ are copied as they are)")
    convert.add_argument("destination", help="new folder (must not exist or be empty): nothing is overwritten")
    convert.set_defaults(run=cmd_rules_convert)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _inputs(files: list[str]) -> list[tuple[str, str, list[bytes]]]:
    """(name, partition, bodies) per input; a file that cannot be read is a usage error."""
    from shared.cli.main import UsageError, read_bodies  # noqa: PLC0415 - shared.cli.main imports this module

    if not files:
        content = sys.stdin.buffer.read()
        return [("<stdin>", partition_for("<stdin>", content), list(read_bodies(io.BytesIO(content))))]
    inputs = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"not a readable file: {name}")
        with path.open("rb") as stream:
            inputs.append((name, partition_for(name), list(read_bodies(stream))))
    return inputs


def cmd_replay(args: argparse.Namespace) -> int:
    logging.getLogger("stormwatch").setLevel(logging.ERROR)  # the per-batch log lines are for App Insights
    settings = local_settings(get_settings())
    if args.fresh:
        refuse_unless_emulator(settings, args.i_mean_it, "replay --fresh")
    pack = _load(args.rules or settings.rules_dir)
    if not pack.rules:
        _say("replay: no rule loaded")
        return 2
    inputs = _inputs(args.files)
    service = table_service(settings)
    try:
        local = local_detector(pack.rules, service, settings)
        if args.fresh:
            _start_fresh(local, settings)
        total = ReplayResult()
        for name, partition, bodies in inputs:
            result = replay_bodies(bodies, partition, local.detector, settings)
            for alert in result.alerts:
                sys.stdout.buffer.write(alert.to_json() + b"\n")
            sys.stdout.buffer.flush()
            _say(f"replay: {name}: {result.records_in} records → {result.events} events "
                 f"({result.dead_letters} dead letters), {result.matched} rule matches, "
                 f"{len(result.alerts)} new alerts ({result.repeated} raised before)")
            total.records_in, total.events = total.records_in + result.records_in, total.events + result.events
            total.dead_letters += result.dead_letters
            total.reports.extend(result.reports)
    except ServiceRequestError as error:
        _say(f"replay: cannot reach the table endpoint {service.url} ({first_line(error)}). Start Azurite "
             f"(`make demo` leaves one on 127.0.0.1:10002) or set {env_name('storage_connection_string')} / "
             f"{env_name('table_endpoint')}.")
        return 2
    except AzureError as error:
        _say(f"replay: table storage at {service.url} refused the request: {first_line(error)}")
        return 2
    _say(f"replay: {len(inputs)} inputs, {total.records_in} records → {total.events} events, "
         f"{total.matched} rule matches, {len(total.alerts)} new alerts ({total.repeated} raised before); "
         f"state in table '{settings.state_table}', alerts in '{settings.alerts_table}' at {service.url}")
    if not args.no_delivery:
        _deliver(settings, Path(args.rules or settings.rules_dir or RULES_DIR))
    return 0


def _deliver(settings: Settings, rules_dir: Path) -> None:
    """The routes of the rules folder, as delivery_fn's next run would send (README "Where alerts go")."""
    report = deliver_through_routes(settings, rules_dir)
    if report is None:
        _say(f"replay: no {rules_dir / ROUTES_FILE}: nothing delivered")
        return
    for error in report.route_errors:
        _say(f"replay: routes.yaml: {error}")
    if report.alerts_awaiting_routes:
        _say(f"replay: {report.alerts_awaiting_routes} alerts went only through the routes that loaded; they are "
             f"routed again once routes.yaml loads cleanly")
    waiting = report.retrying + report.waiting
    _say(f"replay: delivery through {rules_dir / ROUTES_FILE}: {report.deliveries_added} deliveries routed, "
         f"{report.delivered} delivered, {waiting} waiting to retry, {report.failed} failed "
         f"(python -m shared alerts list --failed; deliveries in table '{settings.deliveries_table}')")


def _start_fresh(local: LocalDetector, settings: Settings) -> None:
    removed = local.start_fresh() + Outbox(table_service(settings).get_table_client(settings.deliveries_table)).clear()
    _say(f"replay: --fresh: removed {removed} entities from '{settings.state_table}', '{settings.alerts_table}', "
         f"'{settings.inventory_table}' and '{settings.deliveries_table}'")


def _load(rules_dir: str | None) -> RulePack:
    settings = get_settings()
    pack = load_rules(Path(rules_dir) if rules_dir else RULES_DIR, settings.rule_statuses,
                      settings.unknown_subscriptions)
    for error in pack.errors:
        _say(f"rule file not loaded: {error}")
    for skipped in pack.skipped:
        _say(f"rule not run: {skipped}")
    return pack


def _shown(path: Path) -> Path:
    """A rule file relative to the working folder when it is inside it (shorter, clickable)."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def cmd_rules_test(args: argparse.Namespace) -> int:
    logging.getLogger("stormwatch").setLevel(logging.ERROR)
    pack = _load(args.directory or get_settings().rules_dir)
    failed = 0
    for rule in pack.rules:
        results = run_cases(rule, in_memory_detector)
        broken = [result for result in results if not result.passed]
        # Third-party Sigma rules (they carry a status) come without embedded tests: loading is their test.
        # A rule only correlations count is tested through their cases.
        untested_ok = not results and (rule.spec.status is not None or rule.silent)
        failed += bool(broken) or not (results or untested_ok)
        status = "FAIL" if broken else "PASS" if results else "LOADED" if untested_ok else "NO TESTS"
        print(f"{status:<8} {rule.id} ({len(results)} cases, {_shown(rule.path)})")
        for result in broken:
            print(f"         {result.describe()}")
    print(f"{len(pack.rules)} rules: {len(pack.rules) - failed} passed, {failed} failed or untested; "
          f"{len(pack.errors)} files not loaded")
    return 1 if failed or pack.errors else 0


def cmd_rules_convert(args: argparse.Namespace) -> int:
    """Old-format rule files → Sigma documents in `destination`; files already in Sigma are copied."""
    from shared.cli.main import UsageError  # noqa: PLC0415 - shared.cli.main imports this module

    source, destination = Path(args.source), Path(args.destination)
    if not source.is_dir():
        raise UsageError(f"rules convert: {source} is not a folder")
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise UsageError(f"rules convert: {destination} exists and is not an empty folder (nothing is overwritten)")
    failed = converted = 0
    for path in rule_files(source):
        documents, error = read_documents(path)
        if error is not None:
            _say(f"not converted: {error}")
            failed += 1
            continue
        target = destination / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8")
        if any(is_old_format(document) for document in documents):
            text = convert_text(text, documents)
            converted += 1
        target.write_text(text, encoding="utf-8")
    if (source / LISTS_FOLDER).is_dir():
        shutil.copytree(source / LISTS_FOLDER, destination / LISTS_FOLDER, dirs_exist_ok=True)
    if (source / ROUTES_FILE).is_file():  # where alerts go: not a rule, kept as it is
        shutil.copyfile(source / ROUTES_FILE, destination / ROUTES_FILE)
    _say(f"rules convert: {converted} files converted, {failed} not readable; "
         f"check them with: python -m shared rules test {destination}")
    return 1 if failed else 0
