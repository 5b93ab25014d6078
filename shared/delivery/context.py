"""Context that travels with an alert (what an analyst would look up first), from the enrich package.

Built from the alert's subject (what raised it, saved by detection) before delivery: the operation's
description; the source address's class, Azure service tag and geolocation; for NSGs and NSG rules
the rule content with its risk verdict — from the operation's request body when detection saw it
(the Start stage, correlated by correlation id within its batch), else from ARM; the role name and
scope of a role assignment; the Defender for Cloud alert's details. Each part runs in parallel and
the whole is bounded in time: what is not back by then, or failed, is listed under `missing` and the
alert goes out with the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from shared.clients.arm import ArmError
from shared.delivery.lifecycle import StoredAlert
from shared.detect.alerts import Alert
from shared.enrich.resource_ids import alert_target, resource_target
from shared.enrich.resources import resource_context
from shared.enrich.service import Enricher
from shared.http_errors import InputError
from shared.settings import SettingsError

log = logging.getLogger("stormwatch.delivery")
CONTEXT_SECONDS = 10.0
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stormwatch-context")
_ARM_FROM_BODY = ("security_rule",)  # kinds whose request body holds the whole resource (PUT)
Part = Callable[[], dict[str, Any]]


def defender_alert_id(alert: Alert) -> str | None:
    """The Defender for Cloud alert's ARM id among the alert's group values (rules/defender-alert.yaml)."""
    for value in alert.group.values():
        if value and "/providers/microsoft.security/" in value.lower():
            try:
                alert_target(value)
            except InputError:
                continue
            return value
    return None


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def parts_of(stored: StoredAlert, enricher: Enricher) -> dict[str, Part]:
    """The lookups this alert calls for, by name (none when nothing about it is known)."""
    subject = stored.subject or {}
    parts: dict[str, Part] = {}
    operation, source_ip, resource_id = subject.get("operation"), subject.get("source_ip"), subject.get("resource_id")
    if isinstance(operation, str):
        source = subject.get("source") if isinstance(subject.get("source"), str) else None
        parts["operation"] = lambda: _dump(enricher.operation(operation, source))
    if isinstance(source_ip, str):
        parts["ip"] = lambda: _dump(enricher.ip(source_ip))
    if isinstance(resource_id, str) and resource_id.lower().startswith("/subscriptions/"):
        body = subject.get("request_body")
        parts["resource"] = lambda: _resource(enricher, resource_id, body)
    defender = defender_alert_id(stored.alert)
    if defender is not None:
        parts["defender"] = lambda: _dump(enricher.alert(defender))
    return parts


def _resource(enricher: Enricher, resource_id: str, body: Any) -> dict[str, Any]:
    """From the request body when it holds the whole resource (a rule's PUT), else live from ARM."""
    target = resource_target(resource_id)
    if target.kind in _ARM_FROM_BODY and isinstance(body, dict) and isinstance(body.get("properties"), dict):
        context = resource_context(target, {"id": resource_id, "name": target.name, **body},
                                   fetched_at=datetime.now(UTC))
        return {**_dump(context), "from": "request body"}
    return {**_dump(enricher.resource(resource_id)), "from": "ARM"}


def facts(context: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline of each part, for cards and messages (shared.delivery.formats)."""
    found: list[tuple[str, str]] = []
    operation = context.get("operation") or {}
    if operation.get("description"):
        found.append(("Operation", operation["description"]))
    resource = context.get("resource") or {}
    if resource.get("verdict"):
        found.append((f"Risk ({resource.get('risk', 'unknown')})", resource["verdict"]))
    assignment = resource.get("role_assignment") or {}
    if assignment:
        found.append(("Role", f"{assignment.get('role_name') or assignment.get('role_definition_id')} "
                              f"at {assignment.get('scope')}"))
    ip = context.get("ip") or {}
    if ip.get("ip"):
        described = [ip.get("address_class", "")] + [tag["name"] for tag in ip.get("service_tags", [])[:2]]
        country = (ip.get("geolocation") or {}).get("country")
        found.append(("Source IP", f"{ip['ip']} ({', '.join(part for part in [*described, country] if part)})"))
    defender = context.get("defender") or {}
    if defender.get("display_name"):
        found.append(("Defender", f"{defender['display_name']} ({defender.get('severity') or 'unknown'}, "
                                  f"{defender.get('status') or 'unknown'})"))
    return found


class AlertContext:
    """The deliverer's `enrich`: an alert's context within `seconds`, never raising."""

    def __init__(self, enricher: Callable[[], Enricher], seconds: float = CONTEXT_SECONDS) -> None:
        self._enricher = enricher
        self._seconds = seconds

    def __call__(self, stored: StoredAlert) -> dict[str, Any]:
        if not stored.subject and defender_alert_id(stored.alert) is None:
            return {"missing": ["subject: the alert was raised before its events reached this batch"]}
        try:
            enricher = self._enricher()
        except SettingsError as error:
            return {"missing": [f"enrichment: settings unusable ({error})"[:300]]}
        running: dict[str, Future[dict[str, Any]]] = {
            name: _POOL.submit(part) for name, part in parts_of(stored, enricher).items()}
        wait(running.values(), timeout=self._seconds)
        context: dict[str, Any] = {}
        missing: list[str] = []
        for name, future in running.items():
            if not future.done():
                future.cancel()
                missing.append(f"{name}: no answer within {self._seconds:g} s")
                continue
            failure = future.exception()
            if failure is None:
                context[name] = future.result()
            elif isinstance(failure, InputError | ArmError):
                missing.append(f"{name}: {failure.message}"[:300])
            else:
                log.warning("context part %s of alert %s failed: %s", name, stored.alert.alert_id,
                            type(failure).__name__)
                missing.append(f"{name}: {type(failure).__name__}")
        return {**context, "facts": facts(context), "missing": missing}
