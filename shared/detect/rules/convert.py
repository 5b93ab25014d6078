"""The old rule format (`kind: match | threshold | distinct | first_seen`, `severity`, aggregation keys at
the top) rewritten as Sigma documents, for `python -m shared rules convert`.

A threshold or distinct rule becomes two documents in one file: the rule that selects the events
(named `<slug>-events`, silent) and an `event_count` / `value_count` correlation that keeps the slug as
its `name`, so its state keys and alert `rule_id` stay what they were. Slug ids become UUIDs derived
from the slug (the same slug always gives the same id); the slug moves to `name`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import yaml

# Fixed namespace of the ids derived from slugs: converting twice gives the same ids.
SLUG_NAMESPACE = uuid.UUID("6f0f2b4e-5a7c-4d3e-9b1a-2c8e7d6f5a40")
_HEAD = ("title", "id", "name", "status", "description", "references", "author", "date", "modified", "tags",
         "logsource", "detection", "correlation", "fields", "falsepositives", "level")
_AGGREGATION = {"threshold": "event_count", "distinct": "value_count"}
_FIRST_SEEN = ("learning", "forget")
_EVENTS_SUFFIX = "-events"


def is_old_format(document: Any) -> bool:
    return isinstance(document, Mapping) and "kind" in document


def sigma_id(slug: str) -> str:
    """A slug's UUID: stable, so a converted pack can be converted again without changing ids."""
    try:
        return str(uuid.UUID(slug))
    except ValueError:
        return str(uuid.uuid5(SLUG_NAMESPACE, slug))


def convert(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One old-format rule → its Sigma documents (a document already in Sigma comes back unchanged)."""
    if not is_old_format(document):
        return [dict(document)]
    old = dict(document)
    kind = old.pop("kind")
    slug = str(old.pop("id"))
    if "severity" in old:
        old["level"] = old.pop("severity")
    named = {"id": sigma_id(slug), "name": old.pop("name", None) or slug}
    if kind in _AGGREGATION:
        return _aggregation(old, named, _AGGREGATION[kind])
    if kind == "first_seen":
        first_seen = {"fields": old.pop("fields", [])}
        first_seen.update({key: old.pop(key) for key in _FIRST_SEEN if key in old})
        old["first_seen"] = first_seen
    return [_ordered({**old, **named})]


def _aggregation(old: dict[str, Any], named: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    events_name = f"{named['name'][:63 - len(_EVENTS_SUFFIX)]}{_EVENTS_SUFFIX}"
    base: dict[str, Any] = {
        "title": f"{old['title']} (the events counted)", "id": sigma_id(events_name), "name": events_name,
        "description": f"The events the correlation {named['name']} counts (raises no alert of its own).",
        "logsource": old.pop("logsource", None), "detection": old.pop("detection", None),
        "level": "informational", "filters": old.pop("filters", None)}
    if "status" in old:
        base["status"] = old["status"]
    correlation: dict[str, Any] = {"type": kind, "rules": [events_name]}
    for key in ("group-by", "timespan", "condition"):
        if key in old:
            correlation[key] = old.pop(key)
    old.pop("fields", None)  # Sigma's "fields to show" of the events rule; nothing to carry
    return [_ordered(base), _ordered({**old, **named, "correlation": correlation})]


def _ordered(document: dict[str, Any]) -> dict[str, Any]:
    """Sigma's usual key order first, our custom attributes after; empty values dropped."""
    present = {key: value for key, value in document.items() if value is not None}
    return {**{key: present[key] for key in _HEAD if key in present},
            **{key: value for key, value in present.items() if key not in _HEAD}}


def convert_text(text: str, documents: list[Any]) -> str:
    """The file's new text: its leading comment lines kept, then each converted document."""
    comments = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comments.append(line)
    converted = [item for document in documents for item in convert(document)]
    body = "---\n".join(yaml.safe_dump(item, sort_keys=False, allow_unicode=True, width=110) for item in converted)
    return "\n".join(comments) + ("\n" if comments else "") + body
