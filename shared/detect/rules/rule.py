"""A loaded rule: its validated file plus the predicates and field getters compiled from it."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from shared.detect.rules.model import Condition, RuleFile, RuleKind
from shared.detect.rules.sigma import Getter, Predicate, as_text

# A window of W is kept as buckets of W/10 on event time: a sliding window at 10% resolution.
BUCKETS_PER_WINDOW = 10
SECOND_US = 1_000_000
# An alert lists at most this many events; each bucket of a threshold/distinct key keeps as many.
MAX_EVENT_IDS = 10
# Characters in a distinct key's state document, for the worst case checked at load: a bucket without
# its lists, one value hash, one sample entry (`[time, "event id", "value hash"]`, event ids of up to
# 40 characters).
BUCKET_CHARS, HASH_CHARS, SAMPLE_ENTRY_CHARS = 70, 19, 80
# The buckets of a distinct key (value hashes, capped at the threshold, and evidence samples;
# `distinct_state_chars`): keep their worst case inside one entity (1 MiB, strings counted as UTF-16),
# with room for the rest of the document.
MAX_DISTINCT_STATE_CHARS = 300_000


@dataclass(frozen=True)
class RuleCase:
    """One embedded test of a rule: normalized events (defaults filled in) and the alerts expected."""

    name: str
    alerts: int
    events: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Requirement:
    """A rule matches only events whose `paths` hold one of `values` (case-folded): the rule index's key."""

    paths: tuple[str, ...]
    values: frozenset[str]


@dataclass(frozen=True, eq=False)
class Member:
    """One rule a correlation counts, read with its own log source's field names.

    `selects` recognises its events; a member that is itself a correlation (`rule`) has none: its
    alerts are its hits, and the getters read the alert's group."""

    name: str
    selects: Predicate | None
    group_getters: tuple[Getter, ...]
    value_getters: tuple[Getter, ...] = ()
    rule: Rule | None = None
    requirements: tuple[Requirement, ...] | None = None


@dataclass(frozen=True, eq=False)
class Rule:
    spec: RuleFile
    path: Path
    selects: Predicate
    group_getters: tuple[Getter, ...]
    value_getters: tuple[Getter, ...]
    cases: tuple[RuleCase, ...] = ()
    service: str | None = None  # the Sigma log source service it reads (None: every event)
    members: tuple[Member, ...] = ()  # a correlation's rules, in the order it names them
    level: int = 0  # 0: reads events; n: counts alerts of correlations of level n - 1
    silent: bool = False  # only a correlation's input: raises no alert of its own
    # The rule matches only events meeting one of these (the rule index); None: any event of its log source.
    requirements: tuple[Requirement, ...] | None = None

    @property
    def id(self) -> str:
        """Its Sigma name if it has one (our rules: a readable slug), else its id: state and alerts use it."""
        return self.spec.rule_id

    @property
    def kind(self) -> RuleKind:
        if self.spec.correlation is not None:
            return self.spec.correlation.type
        return "first_seen" if self.spec.first_seen is not None else "match"

    @property
    def group_by(self) -> list[str]:
        return self.spec.correlation.group_by if self.spec.correlation is not None else self.spec.group_by

    @property
    def new_value_names(self) -> list[str]:
        """first_seen: the fields whose values must be new."""
        return self.spec.first_seen.fields if self.spec.first_seen is not None else []

    @property
    def timespan(self) -> timedelta | None:
        return self.spec.correlation.timespan if self.spec.correlation is not None else None

    @property
    def condition(self) -> Condition | None:
        return self.spec.correlation.condition if self.spec.correlation is not None else None

    @cached_property
    def needed(self) -> Condition:
        """The condition a window must meet (temporal: by default every referenced rule present)."""
        return self.condition or Condition(gte=max(1, len(self.members)))

    @property
    def stateful(self) -> bool:
        """Match rules keep no state unless they suppress repeats per group key."""
        return self.kind != "match" or self.spec.suppress is not None

    @property
    def window_us(self) -> int:
        return _us(self.timespan)

    @property
    def bucket_us(self) -> int:
        return self.window_us // BUCKETS_PER_WINDOW

    @property
    def lateness_us(self) -> int:
        return _us(self.spec.lateness)

    @property
    def suppress_us(self) -> int:
        """Default for aggregations: one window, so one burst raises one alert."""
        if self.spec.suppress is not None:
            return _us(self.spec.suppress)
        return self.window_us

    @property
    def forget_us(self) -> int:
        return _us(self.spec.first_seen.forget if self.spec.first_seen else None)

    @property
    def learning_us(self) -> int:
        return _us(self.spec.first_seen.learning if self.spec.first_seen else None)

    @cached_property
    def horizon(self) -> timedelta:
        """How long after its last write a state entity can still matter (housekeeping deletes it then)."""
        if self.spec.first_seen is not None:
            return self.spec.first_seen.forget
        if self.kind == "match":
            return (self.spec.suppress or timedelta(0)) + self.spec.lateness
        timespan = self.timespan or timedelta(0)
        return 2 * timespan + self.spec.lateness + timedelta(microseconds=self.suppress_us)

    def matching(self, event: Mapping[str, Any]) -> tuple[int, ...]:
        """Which members select the event (a rule that is no correlation: member 0, itself)."""
        if not self.members:
            return (0,) if self.selects(event) else ()
        return tuple(index for index, member in enumerate(self.members)
                     if member.selects is not None and member.selects(event))

    def group_of(self, event: Mapping[str, Any], member: int = 0) -> tuple[str | None, ...]:
        """The group-by values as written in the event (first value when a path reaches several)."""
        getters = self.members[member].group_getters if self.members else self.group_getters
        return tuple(_first_text(getter(event)) for getter in getters)

    def new_values_of(self, event: Mapping[str, Any]) -> tuple[str, ...] | None:
        """first_seen: the value tuple, or None when a value is missing (nothing to call new)."""
        values = [_first_text(getter(event)) for getter in self.value_getters]
        present = tuple(value for value in values if value)
        return present if len(present) == len(values) else None

    def distinct_values_of(self, event: Mapping[str, Any], member: int = 0) -> set[str]:
        """value_count: every value the counted field holds (case-folded)."""
        getters = self.members[member].value_getters if self.members else self.value_getters
        return {as_text(value) for value in getters[0](event) if value is not None}


def aggregate_buckets(timespan: timedelta, lateness: timedelta) -> int:
    """How many buckets a threshold/distinct key can hold: they reach back lateness + timespan."""
    return BUCKETS_PER_WINDOW * 2 + int(lateness / timespan * BUCKETS_PER_WINDOW) + 2


def sampled_events_bound(kind: str, gte: int, buckets: int) -> int:
    """How many sample entries a threshold/distinct key can hold (`shared.detect.rules.aggregate`).

    Only buckets that a window able to fire may still hold keep a sample: those starting after
    `suppressed_until` − timespan. Before `suppressed_until` that is at most one window of buckets; from
    it on, every window is below the threshold (else it would have fired): fewer than `gte` events per
    window (threshold), fewer than `gte` values per bucket (distinct). A bucket keeps at most
    MAX_EVENT_IDS entries.
    """
    if kind == "event_count":
        after = min(MAX_EVENT_IDS * buckets, (gte - 1) * math.ceil(buckets / BUCKETS_PER_WINDOW))
    else:
        after = min(MAX_EVENT_IDS, gte - 1) * buckets
    return BUCKETS_PER_WINDOW * MAX_EVENT_IDS + after


def distinct_state_chars(gte: int, timespan: timedelta, lateness: timedelta) -> int:
    """The largest the buckets of a distinct key can grow, in characters (value hashes are capped at `gte`
    per bucket): checked at load."""
    buckets = aggregate_buckets(timespan, lateness)
    return (buckets * (BUCKET_CHARS + gte * HASH_CHARS)
            + sampled_events_bound("value_count", gte, buckets) * SAMPLE_ENTRY_CHARS)


def state_key(group: tuple[str | None, ...], values: tuple[str, ...] = ()) -> str:
    """A Table-safe RowKey for a group (and value tuple): a hash, since values may hold `/ \\ # ?`."""
    canonical = "\x1f".join("\x00" if part is None else as_text(part) for part in (*group, *values))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _first_text(found: list[Any]) -> str | None:
    for value in found:
        if value is None:
            continue
        if isinstance(value, str):
            return value
        return as_text(value)
    return None


def _us(duration: timedelta | None) -> int:
    return 0 if duration is None else int(duration.total_seconds() * SECOND_US)
