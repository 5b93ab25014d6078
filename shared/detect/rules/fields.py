"""Sigma log sources and field names resolved against normalized events, from `field_map.yaml` (data).

A rule's `logsource` picks a service (`activitylogs`, `auditlogs`, `signinlogs`, `riskdetection`,
`pim`): the service says which events the rule may see and what each field name means for that log,
whichever naming family (Event Hub JSON, Log Analytics, Graph) the rule's author used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.detect.rules.errors import RuleError
from shared.detect.rules.sigma import Getter, compile_path
from shared.normalized_event import FIELD_NAMES

FIELD_MAP_FILE = Path(__file__).with_name("field_map.yaml")
AZURE = "azure"
_NORMALIZED = frozenset(FIELD_NAMES)


class _Records(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: list[str] = Field(min_length=1)
    category: list[str] = Field(default_factory=list)


class _Service(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    aliases: list[str] = Field(default_factory=list)
    records: _Records
    fields: dict[str, list[str]] = Field(default_factory=dict)


class _FieldMapFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    services: dict[str, _Service]


@dataclass(frozen=True)
class Service:
    """One Sigma service of product azure: the events it routes to and its field names."""

    name: str
    sources: frozenset[str]
    categories: frozenset[str]  # empty: any category of those sources
    fields: Mapping[str, tuple[str, ...]]

    def routes(self, event: Mapping[str, Any]) -> bool:
        """True when the event is a record of this log (rules of this service see only those)."""
        if event.get("source") not in self.sources:
            return False
        category = event.get("category")
        return not self.categories or (isinstance(category, str) and category.casefold() in self.categories)


@dataclass(frozen=True)
class FieldMap:
    services: Mapping[str, Service]
    aliases: Mapping[str, str]

    def service(self, logsource: Mapping[str, Any] | None) -> Service | None:
        """The service a `logsource` names; None for no log source (any event). RuleError if unsupported."""
        if not logsource:
            return None
        product = str(logsource.get("product") or "").casefold()
        if product != AZURE:
            raise RuleError(f"logsource product {logsource.get('product')!r} is not supported (only azure)",
                            ("logsource", "product"))
        name = logsource.get("service")
        if name is None:
            return None
        key = self.aliases.get(str(name).casefold())
        if key is None:
            raise RuleError(f"logsource service {name!r} is not known (known: {', '.join(sorted(self.services))}; "
                            "add it to shared/detect/rules/field_map.yaml)", ("logsource", "service"))
        return self.services[key]

    def getter(self, name: str, service: Service | None) -> Getter:
        """Sigma field name → the values it stands for in this service's events (see field_map.yaml)."""
        return compile_alternatives(self.paths(name, service))

    def paths(self, name: str, service: Service | None) -> tuple[str, ...]:
        parts = name.split(".")
        if not all(parts):
            raise RuleError(f"field path {name!r} has an empty segment")
        if service is not None:
            for cut in range(len(parts), 0, -1):
                mapped = service.fields.get(".".join(parts[:cut]).casefold())
                if mapped is not None:
                    rest = ".".join(parts[cut:])
                    return tuple(f"{path}.{rest}" if rest else path for path in mapped)
        head = parts[0].casefold()
        if head == "raw":
            return (name,)
        if head in _NORMALIZED:  # a normalized field; for a Sigma service also the raw record's own name
            normalized = ".".join([head, *parts[1:]])
            return (normalized,) if service is None else (normalized, f"raw.{name}", f"raw.properties.{name}")
        return (f"raw.{name}", f"raw.properties.{name}")


def compile_alternatives(paths: tuple[str, ...]) -> Getter:
    """Several paths read as one: every value any of them reaches."""
    getters = tuple(compile_path(path) for path in paths)
    if len(getters) == 1:
        return getters[0]

    def any_of(event: Mapping[str, Any]) -> list[Any]:
        found: list[Any] = []
        for getter in getters:
            found.extend(getter(event))
        return found

    return any_of


@cache
def field_map(path: Path = FIELD_MAP_FILE) -> FieldMap:
    """The field map shipped with the app (read once per process)."""
    document = _FieldMapFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    services: dict[str, Service] = {}
    aliases: dict[str, str] = {}
    for name, spec in document.services.items():
        services[name] = Service(
            name=name, sources=frozenset(spec.records.source),
            categories=frozenset(category.casefold() for category in spec.records.category),
            fields={key.casefold(): tuple(paths) for key, paths in spec.fields.items()})
        for alias in (name, *spec.aliases):
            aliases[alias.casefold()] = name
    return FieldMap(services=services, aliases=aliases)
