"""Sigma correlation rules compiled onto the rules they reference (`event_count`, `value_count`,
`temporal`, `temporal_ordered`).

A correlation reads each referenced rule's events with that rule's own log source and field names
(a group-by name may be an alias: `aliases: {user: {failed_logon: actor, mfa_denied: raw.identity}}`).
A referenced rule that is itself a correlation feeds its alerts in: their group values are read by
the group-by names, and the correlation runs one level after it in the batch (`Rule.level`). That is
how Sigma writes "at least N of A, then B": an `event_count` over A, referenced by a
`temporal_ordered` with B.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared.detect.rules.errors import RuleError
from shared.detect.rules.fields import field_map
from shared.detect.rules.index import merged
from shared.detect.rules.model import Correlation, RuleFile
from shared.detect.rules.rule import BUCKETS_PER_WINDOW, MAX_DISTINCT_STATE_CHARS, Member, Rule, distinct_state_chars
from shared.detect.rules.sigma import Getter, Predicate

# A chain of correlations deeper than this is refused (each level is one more round of state writes).
MAX_LEVEL = 3


def compile_correlation(spec: RuleFile, path: Path, loaded: Mapping[str, Rule]) -> Rule:
    """The correlation as a rule whose members are the rules it names (already loaded: by name or id)."""
    correlation = spec.correlation
    if correlation is None:
        raise RuleError("not a correlation")
    _check(spec, correlation)
    members: list[Member] = []
    for index, reference in enumerate(correlation.rules):
        target = loaded.get(reference)
        loc = ("correlation", "rules", index)
        if target is None:
            raise RuleError(f"rule {reference!r} is not loaded (a correlation names rules by name or id; "
                            "a rule that failed to load or whose status is not run cannot be counted)", loc)
        if target.spec.correlation is None and target.kind != "match":
            raise RuleError(f"rule {reference!r} is a {target.kind} rule: a correlation counts plain rules "
                            "and other correlations", loc)
        members.append(_member(correlation, reference, target))
    level = max((member.rule.level + 1 for member in members if member.rule is not None), default=0)
    if level > MAX_LEVEL:
        raise RuleError(f"correlations chained deeper than {MAX_LEVEL} levels", ("correlation", "rules"))
    services = {member_rule.service for member_rule in (loaded[name] for name in correlation.rules)}
    direct = [member.selects for member in members if member.selects is not None]
    return Rule(spec=spec, path=path, selects=_any(direct), group_getters=(), value_getters=(),
                service=services.pop() if len(services) == 1 and level == 0 else None,
                members=tuple(members), level=level,
                requirements=merged([member.requirements for member in members if member.selects is not None]))


def _check(spec: RuleFile, correlation: Correlation) -> None:
    if spec.group_by or spec.first_seen or spec.filters:
        raise RuleError("a correlation says its group-by in its correlation section; first_seen and filters "
                        "belong to the rules it counts", ("correlation",))
    kind, condition = correlation.type, correlation.condition
    if kind in ("event_count", "value_count"):
        seconds = correlation.timespan.total_seconds()
        if seconds < BUCKETS_PER_WINDOW or seconds % BUCKETS_PER_WINDOW:
            raise RuleError(f"timespan must be a multiple of {BUCKETS_PER_WINDOW}s (it is cut into "
                            f"{BUCKETS_PER_WINDOW} buckets)", ("correlation", "timespan"))
        if condition is None:
            raise RuleError(f"an {kind} correlation needs a condition, e.g. {{gte: 10}}", ("correlation",))
    if kind == "value_count" and (condition is None or not condition.field):
        raise RuleError("a value_count correlation counts the values of condition.field", ("correlation", "condition"))
    if kind == "value_count" and condition is not None and distinct_state_chars(
            condition.saturation, correlation.timespan, spec.lateness) > MAX_DISTINCT_STATE_CHARS:
        raise RuleError(f"a count of {condition.saturation} values with this timespan and lateness would not fit in "
                        "one state entity: lower it or the lateness", ("correlation", "condition"))
    if kind != "value_count" and condition is not None and condition.field:
        raise RuleError(f"condition.field belongs to value_count, not {kind}", ("correlation", "condition", "field"))
    if kind == "temporal_ordered" and condition is not None:
        raise RuleError("temporal_ordered needs every rule, in order: it takes no condition",
                        ("correlation", "condition"))
    if kind in ("temporal", "temporal_ordered") and len(correlation.rules) < 2:
        raise RuleError(f"{kind} relates two rules or more", ("correlation", "rules"))


def _member(correlation: Correlation, reference: str, target: Rule) -> Member:
    """How the correlation reads one referenced rule's hits: its selection, its fields."""
    names = [correlation.aliases.get(name, {}).get(reference, name) for name in correlation.group_by]
    counted = correlation.condition.field if correlation.type == "value_count" and correlation.condition else None
    if target.spec.correlation is not None:  # its alerts: values by its group-by names
        return Member(reference, None, tuple(_alert_group(name) for name in names),
                      (_alert_group(counted),) if counted else (), rule=target)
    service = field_map().service(target.spec.logsource.model_dump() if target.spec.logsource else None)

    def resolve(name: str, loc: tuple[str | int, ...]) -> Getter:
        try:
            return field_map().getter(name, service)
        except RuleError as error:
            raise RuleError(error.message, loc) from None

    group = tuple(resolve(name, ("correlation", "group-by", index)) for index, name in enumerate(names))
    values = (resolve(counted, ("correlation", "condition", "field")),) if counted else ()
    return Member(reference, target.selects, group, values, requirements=target.requirements)


def _alert_group(name: str) -> Getter:
    def read(alert: Mapping[str, Any]) -> list[Any]:
        group = alert.get("group")
        return [group.get(name)] if isinstance(group, Mapping) else []

    return read


def _any(predicates: Sequence[Predicate]) -> Predicate:
    return lambda event: any(selects(event) for selects in predicates)


def silence_inputs(rules: list[Rule], specs: Sequence[RuleFile]) -> list[Rule]:
    """Rules a correlation counts raise no alert of their own, unless it says `generate: true`. That holds
    even when the correlation failed to load: its inputs alone would raise an alert per event."""
    quiet = {name for spec in specs if spec.correlation is not None and not spec.correlation.generate
             for name in spec.correlation.rules}
    return [replace(rule, silent=True) if quiet & {rule.id, rule.spec.id} else rule for rule in rules]


def inputs_of(rule: Rule) -> list[Rule]:
    """The correlations a correlation counts, recursively, silent: what must run beside it alone."""
    return [item for member in rule.members if member.rule is not None
            for item in (*inputs_of(member.rule), replace(member.rule, silent=True))]
