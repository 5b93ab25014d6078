"""What a webhook receives, per format. Pure: alert and context in, JSON document out.

- `json`: the alert as published on the `alerts` hub, plus `context` (what enrichment found) and `route`.
- `teams`: a Teams Workflows message ("Send webhook alerts to a channel") carrying one Adaptive Card 1.4.
- `slack`: a Slack incoming-webhook message in Block Kit, with `text` as the notification fallback.

Every text taken from an alert is cut to what the receiving format accepts (Slack: header 150, section
3000, field 2000 characters, at most 10 fields), so a long summary cannot get the whole message refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from shared.detect.alerts import Alert, truncated

Format = Literal["json", "teams", "slack"]
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
_COLORS = {"critical": "attention", "high": "attention", "medium": "warning", "low": "accent",
           "informational": "default"}
MAX_FACTS = 10  # Slack's limit on section fields; the card shows the same facts
FACT_CHARS = 500


def payload(format: Format, alert: Alert, context: Mapping[str, Any], route: str) -> dict[str, Any]:
    if format == "teams":
        return teams_message(alert, context)
    if format == "slack":
        return slack_message(alert, context)
    return {**alert.model_dump(mode="json"), "context": dict(context), "route": route}


def facts(alert: Alert, context: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The name/value pairs an analyst reads first, most telling first, at most MAX_FACTS."""
    found: list[tuple[str, str]] = [("Severity", alert.severity), ("Rule", alert.rule_id),
                                    ("When (UTC)", alert.time.strftime("%Y-%m-%d %H:%M:%S"))]
    found += [(name, value) for name, value in context_facts(context)]
    found += [(name, value) for name, value in alert.group.items() if value]
    if alert.count > 1:
        found.append(("Count", str(alert.count)))
    if alert.tags:
        found.append(("ATT&CK", ", ".join(alert.tags)))
    return [(truncated(name, 100), truncated(value, FACT_CHARS)) for name, value in found[:MAX_FACTS]]


def context_facts(context: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The context's headline facts (shared.delivery.context puts them under `facts`)."""
    listed = context.get("facts")
    if not isinstance(listed, list):
        return []
    return [(str(item[0]), str(item[1])) for item in listed
            if isinstance(item, list | tuple) and len(item) == 2 and item[1] not in (None, "")]


def teams_message(alert: Alert, context: Mapping[str, Any]) -> dict[str, Any]:
    missing = context.get("missing")
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": truncated(alert.title, 200), "weight": "Bolder", "size": "Large",
         "color": _COLORS.get(alert.severity, "default"), "wrap": True},
        {"type": "TextBlock", "text": truncated(alert.summary, 2000), "wrap": True},
        {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in facts(alert, context)]},
    ]
    if isinstance(missing, list) and missing:
        body.append({"type": "TextBlock", "text": truncated("Context not available: " + "; ".join(
            str(item) for item in missing), 1000), "isSubtle": True, "wrap": True, "size": "Small"})
    body.append({"type": "TextBlock", "text": f"Stormwatch alert {alert.alert_id}", "isSubtle": True,
                 "size": "Small", "wrap": True})
    card = {"$schema": CARD_SCHEMA, "type": "AdaptiveCard", "version": "1.4", "body": body,
            "msteams": {"width": "Full"}}
    return {"type": "message", "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None,
                                                "content": card}]}


def _mrkdwn(text: str) -> str:
    """Slack's three control characters escaped, so a value cannot mention @channel or forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(alert: Alert, context: Mapping[str, Any]) -> dict[str, Any]:
    fields = [{"type": "mrkdwn", "text": truncated(f"*{_mrkdwn(name)}*\n{_mrkdwn(value)}", 2000)}
              for name, value in facts(alert, context)]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncated(alert.title, 150), "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn", "text": truncated(_mrkdwn(alert.summary), 3000)}},
        {"type": "section", "fields": fields},
    ]
    missing = context.get("missing")
    notes = [f"Stormwatch alert {alert.alert_id}"]
    if isinstance(missing, list) and missing:
        notes.append("context not available: " + "; ".join(str(item) for item in missing))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": truncated(_mrkdwn(note), 2000)}
                                                   for note in notes]})
    return {"text": truncated(f"[{alert.severity}] {alert.summary}", 3000), "blocks": blocks}
