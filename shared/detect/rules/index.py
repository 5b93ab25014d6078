"""Which rules an event can match, without trying them all: rules indexed by the values they require.

Most Azure rules test one operation (or a few): `operation: MICROSOFT.AUTHORIZATION/LOCKS/DELETE`,
`operationName: Add member to role`. At load, each rule's detection says which values one field must
hold for it to match at all (`shared.detect.rules.sigma.required_values`, through its condition: `and`
narrows, `or` widens, `not` knows nothing); the rule is indexed under that field's resolved paths and
those values. Per event, the index reads each indexed path once and looks the values up. Rules that
require nothing of any field (counts of every sign-in, keyword rules) are tried on every event of their
log source, as before.

The index only ever skips a rule whose detection cannot match the event, so matching is unchanged
(tests/test_rule_index.py checks it over the samples, the pack and SigmaHQ's rules).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.detect.rules.fields import compile_alternatives, field_map
from shared.detect.rules.rule import Requirement, Rule
from shared.detect.rules.sigma import Getter, as_text

Paths = tuple[str, ...]


@dataclass(frozen=True)
class RuleIndex:
    rules: tuple[Rule, ...]
    by_value: Mapping[Paths, Mapping[str, tuple[int, ...]]]  # paths → value → positions in `rules`
    getters: Mapping[Paths, Getter]
    everywhere: Mapping[str | None, tuple[int, ...]]  # service (None: every event) → positions

    @classmethod
    def of(cls, rules: Sequence[Rule]) -> RuleIndex:
        by_value: dict[Paths, dict[str, list[int]]] = {}
        everywhere: dict[str | None, list[int]] = {}
        for position, rule in enumerate(rules):
            if rule.requirements is None:
                everywhere.setdefault(rule.service, []).append(position)
                continue
            for requirement in rule.requirements:
                values = by_value.setdefault(requirement.paths, {})
                for value in requirement.values:
                    values.setdefault(value, []).append(position)
        return cls(
            rules=tuple(rules),
            by_value={paths: {value: tuple(found) for value, found in values.items()}
                      for paths, values in by_value.items()},
            getters={paths: compile_alternatives(paths) for paths in by_value},
            everywhere={service: tuple(found) for service, found in everywhere.items()},
        )

    def candidates(self, event: Mapping[str, Any]) -> list[Rule]:
        """The rules that may match `event`, in pack order (each still checks its whole detection)."""
        positions: set[int] = set()
        services = field_map().services
        for service, found in self.everywhere.items():
            if service is None or services[service].routes(event):
                positions.update(found)
        for paths, values in self.by_value.items():
            for value in self.getters[paths](event):
                if value is not None:
                    positions.update(values.get(as_text(value), ()))
        return [self.rules[position] for position in sorted(positions)]


def requirement_of(candidates: Iterable[tuple[Paths, frozenset[str] | None]]) -> tuple[Requirement, ...] | None:
    """The best known requirement of a rule: an operation-like field (rare values) first, then the fewest
    values (`result: Success` alone is a poor key, but better than none)."""
    known = [Requirement(paths, values) for paths, values in candidates if values is not None]
    if not known:
        return None
    return (min(known, key=lambda item: (not any("operation" in path.lower() for path in item.paths),
                                         len(item.values), item.paths)),)


def merged(requirements: Sequence[tuple[Requirement, ...] | None]) -> tuple[Requirement, ...] | None:
    """A correlation matches an event when one of its rules does: any of their requirements will do, and
    a rule without one makes the correlation try every event."""
    if not requirements or any(item is None for item in requirements):
        return None
    return tuple(requirement for item in requirements if item is not None for requirement in item)
