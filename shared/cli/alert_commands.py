"""`python -m shared alerts list|show|ack|close|retry`: the alert lifecycle and failed deliveries from a terminal.

Results are JSON lines on stdout (pipe them to jq); the same tables as delivery_fn and the HTTP API
(Azurite by default, or the configured account). Changes are recorded as made by `cli:<login name>`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from shared.cli.local_storage import local_settings
from shared.cli.usage import UsageError
from shared.delivery.api import alert_document
from shared.delivery.engine import Deliverer, deliverer_for
from shared.delivery.lifecycle import STATUSES, StatusChange, check_alert_id
from shared.http_errors import InputError
from shared.settings import get_settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alerts = commands.add_parser("alerts", help="list, show, acknowledge, close alerts; retry failed deliveries")
    actions = alerts.add_subparsers(dest="alerts_command", required=True)
    listing = actions.add_parser("list", help="latest alerts with their status, one JSON line each")
    listing.add_argument("--status", choices=STATUSES, help="only alerts with this status")
    listing.add_argument("--failed", action="store_true", help="list failed deliveries instead")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=cmd_list)
    show = actions.add_parser("show", help="one alert with its status and deliveries")
    show.add_argument("alert_id")
    show.set_defaults(run=cmd_show)
    ack = actions.add_parser("ack", help="acknowledge an alert (and take it)")
    ack.add_argument("alert_id")
    ack.add_argument("--owner", help="who owns it now (default: you)")
    ack.set_defaults(run=cmd_ack)
    close = actions.add_parser("close", help="close an alert with a reason")
    close.add_argument("alert_id")
    close.add_argument("--reason", required=True)
    close.add_argument("--false-positive", action="store_true", help="close it as a false positive")
    close.set_defaults(run=cmd_close)
    retry = actions.add_parser("retry", help="deliver an alert's failed deliveries again")
    retry.add_argument("alert_id")
    retry.add_argument("--route", help="only this route")
    retry.set_defaults(run=cmd_retry)


def _deliverer() -> Deliverer:
    return deliverer_for(local_settings(get_settings()))


def _print(document: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(document) + b"\n")
    sys.stdout.buffer.flush()


def _me() -> str:
    return f"cli:{getpass.getuser()}"


def _checked(alert_id: str) -> str:
    try:
        return check_alert_id(alert_id)
    except InputError as error:
        raise UsageError(error.message) from None


def cmd_list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        raise UsageError("--limit must be from 1 to 10000")
    current = _deliverer()
    if args.failed:
        for row in current.outbox.failed(args.limit):
            _print(row.model_dump(mode="json"))
        return 0
    for stored in current.alerts.recent(args.limit, args.status):
        alert, lifecycle = stored.alert, stored.lifecycle
        _print({"alert_id": alert.alert_id, "time": alert.model_dump(mode="json")["time"], "severity": alert.severity,
                "rule_id": alert.rule_id, "status": lifecycle.status, "owner": lifecycle.owner,
                "summary": alert.summary})
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    alert_id = _checked(args.alert_id)
    current = _deliverer()
    stored = current.alerts.get(alert_id)
    if stored is None:
        raise UsageError(f"no alert {alert_id}")
    _print(alert_document(stored, current.outbox))
    return 0


def _change(alert_id: str, change: StatusChange) -> int:
    try:
        stored = _deliverer().alerts.set_status(_checked(alert_id), change, _me(), datetime.now(UTC))
    except InputError as error:
        raise UsageError(error.message) from None
    _print(stored.as_json())
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    return _change(args.alert_id, _status_change(status="acknowledged", owner=args.owner or _me()))


def cmd_close(args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise UsageError("--reason must say why")
    reason = args.reason[:1000]
    return _change(args.alert_id, _status_change(status="false_positive" if args.false_positive else "closed",
                                                 reason=reason))


def _status_change(**fields: str) -> StatusChange:
    """The change the options ask for; what the model refuses (an owner too long) is a one-line usage error."""
    try:
        return StatusChange.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        raise UsageError(f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}") from None


def cmd_retry(args: argparse.Namespace) -> int:
    try:
        retried = _deliverer().outbox.retry(_checked(args.alert_id), args.route, datetime.now(UTC))
    except InputError as error:
        raise UsageError(error.message) from None
    for row in retried:
        _print(row.model_dump(mode="json"))
    print(f"alerts retry: {len(retried)} failed deliveries due again (delivery_fn's next run sends them)",
          file=sys.stderr)
    return 0
