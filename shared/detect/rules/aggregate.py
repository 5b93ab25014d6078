"""State transitions of stateful rules: (state before, this batch's hits for one key) → state after + alerts.

Pure functions: no clock, no I/O. The caller reads the state entity once, applies one transition for
all of a key's events in the batch, and writes once with the entity's ETag — so the alert decision
and the counts it rests on are one write and cannot diverge.

Exactness under redelivery: the state keeps, per source partition, the highest sequence number it has
applied (the watermark); hits at or below it are skipped. Alerts raised by a batch are kept in the
state with the position of the hit that raised them, so a redelivered batch re-emits them (an upsert
of the same alert id) in case the first attempt stopped between the state write and the alert write.

The events an aggregate alert lists (`event_ids`) are a function of the hits its window holds when it
fires, whatever the order and the batches they came in: each bucket keeps its earliest hits (threshold:
one per event id; distinct: the first hit of each value), and the alert takes the earliest of its
window's buckets. A bucket that no window able to fire can hold any more drops its sample.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from shared import __version__
from shared.detect.alerts import Alert, alert_id, render_summary
from shared.detect.rules.rule import MAX_EVENT_IDS, Rule

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# first_seen: refresh last_seen (one write) at most this often per value: keeps housekeeping honest.
LAST_SEEN_REFRESH_US = 24 * 3600 * 1_000_000
FIRED_KEPT = 10
# temporal correlations: the newest hits kept per referenced rule and key (enough to find the tightest
# set; older ones can only give sets that are wider or already alerted on).
STEPS_PER_MEMBER = 20
# threshold: event ids remembered per bucket to skip events normalize published twice; beyond this many
# the bucket alone meets any threshold up to it, and larger thresholds dedupe on a best-effort basis.
THRESHOLD_IDS_KEPT = 1000


class Sampled(NamedTuple):
    """One entry of a bucket's evidence sample, ordered by (time, event id, tag).

    `tag` is what the entry stands for: the event id (threshold) or the hash of a value (distinct).
    """

    time_us: int
    event_id: str
    tag: str


class Hit(NamedTuple):
    """One event a rule selected, with its position on the input partition (and, for a correlation,
    which of its rules selected it). A correlation's alert counted by another correlation is a hit too:
    its `event` is the alert, its position that of the hit that raised it."""

    time_us: int
    event_id: str
    sequence: int
    event: Mapping[str, Any]
    member: int = 0


@dataclass
class Bucket:
    count: int
    first_us: int
    last_us: int
    hashes: set[str] = field(default_factory=set)
    # The MAX_EVENT_IDS tags first seen in this bucket, each with its earliest hit, sorted.
    sample: list[Sampled] = field(default_factory=list)

    def keep(self, entry: Sampled) -> None:
        """Keep `entry` if it is among the earliest: the result does not depend on the order of calls."""
        for index, kept in enumerate(self.sample):
            if kept.tag == entry.tag:
                if kept <= entry:
                    return
                del self.sample[index]
                break
        bisect.insort(self.sample, entry)
        del self.sample[MAX_EVENT_IDS:]

    def sample_json(self) -> list[list[int | str]]:
        return [[entry.time_us, entry.event_id] if entry.tag == entry.event_id else list(entry)
                for entry in self.sample]


def _sampled(item: list[Any]) -> Sampled:
    moment, event_id, *tag = item
    return Sampled(moment, event_id, tag[0] if tag else event_id)


@dataclass
class KeyState:
    """Everything kept for one (rule, group key). Serialized as one JSON document in the entity."""

    watermarks: dict[str, int] = field(default_factory=dict)
    latest_us: int | None = None
    buckets: dict[int, Bucket] = field(default_factory=dict)
    suppressed_until_us: int | None = None
    first_us: int | None = None
    last_us: int | None = None
    fired: list[dict[str, Any]] = field(default_factory=list)
    # temporal correlations: recent hits as [member, time_us, event_id, [event ids it stands for]]
    steps: list[list[Any]] = field(default_factory=list)

    def copy(self) -> KeyState:
        return KeyState(
            watermarks=dict(self.watermarks), latest_us=self.latest_us,
            buckets={start: Bucket(b.count, b.first_us, b.last_us, set(b.hashes), list(b.sample))
                     for start, b in self.buckets.items()},
            suppressed_until_us=self.suppressed_until_us,
            first_us=self.first_us, last_us=self.last_us, fired=list(self.fired), steps=list(self.steps),
        )

    def to_json(self) -> str:
        return orjson.dumps({
            "watermarks": self.watermarks, "latest_us": self.latest_us,
            "buckets": [[start, b.count, b.first_us, b.last_us, sorted(b.hashes), b.sample_json()]
                        for start, b in sorted(self.buckets.items())],
            "suppressed_until_us": self.suppressed_until_us,
            "first_us": self.first_us, "last_us": self.last_us, "fired": self.fired, "steps": self.steps,
        }).decode()

    @classmethod
    def from_json(cls, text: str) -> KeyState:
        data = orjson.loads(text)
        buckets: dict[int, Bucket] = {}
        for start, count, first, last, hashes, *sample in data["buckets"]:
            buckets[start] = Bucket(count, first, last, set(hashes), [_sampled(item) for item in sample[0]]
                                    if sample else [])
        state = cls(
            watermarks=data["watermarks"], latest_us=data["latest_us"], buckets=buckets,
            suppressed_until_us=data["suppressed_until_us"], first_us=data["first_us"],
            last_us=data["last_us"], fired=data["fired"], steps=data.get("steps", []),
        )
        # Written before buckets kept samples: the key's 10 newest hits in one list. Each goes to its bucket,
        # the latest starting at or before it (pruning drops a bucket and its hits together).
        starts = sorted(buckets)
        for moment, event_id in data.get("samples", []):
            index = bisect.bisect_right(starts, moment) - 1
            if index >= 0:
                buckets[starts[index]].keep(Sampled(moment, event_id, event_id))
        return state


class Raised(NamedTuple):
    alert: Alert
    sequence: int  # of the hit that raised it: a redelivery of that hit re-emits the alert


@dataclass
class Transition:
    """What one batch does to one key: the state to write (None: nothing changed) and the alerts."""

    state: KeyState | None
    raised: list[Raised] = field(default_factory=list)
    replayed: list[Raised] = field(default_factory=list)
    applied: int = 0
    redelivered: int = 0
    too_late: int = 0
    duplicates: int = 0  # same event_id again at a new position: normalize published it twice

    @property
    def alerts(self) -> list[Alert]:
        return [raised.alert for raised in self.raised]

    @property
    def emitted(self) -> list[Raised]:
        """New alerts and the ones a redelivered batch raised before (emitted again: same ids)."""
        return [*self.raised, *self.replayed]


@dataclass(frozen=True)
class KeyContext:
    """Who the key is: the rule, its RowKey, the group values (and first_seen's value tuple)."""

    rule: Rule
    key: str
    group: dict[str, str | None]
    partition: str
    learning_end_us: int | None = None


def to_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def advance(context: KeyContext, before: KeyState | None, hits: Sequence[Hit]) -> Transition:
    """Apply one batch's hits for one key. `before` is never modified (it may be a cached copy)."""
    kind = context.rule.kind
    if kind == "first_seen":
        return _first_seen(context, before, hits)
    state = before.copy() if before is not None else KeyState()
    replayed = _replayed(state, context.partition, hits)
    mark = state.watermarks.get(context.partition, -1)
    # Arrival (sequence) order, as across batches: then where batch boundaries fall cannot change which
    # hit completes a window, so a redelivery in other batch sizes ends exactly as the first delivery.
    fresh = [hit for hit in hits if hit.sequence > mark or hit.sequence < 0]
    transition = Transition(state=None, replayed=replayed, redelivered=len(hits) - len(fresh))
    if not fresh:
        return transition
    state.watermarks[context.partition] = max(mark, *(hit.sequence for hit in fresh))
    if kind == "match":
        _suppressed_matches(context, state, fresh, transition)
    elif kind in ("temporal", "temporal_ordered"):
        _temporal(context, state, fresh, transition)
    else:
        _aggregate(context, state, fresh, transition)
    _remember(state, context.partition, transition.raised)
    transition.state = state
    return transition


def _replayed(state: KeyState, partition: str, hits: Sequence[Hit]) -> list[Raised]:
    """Alerts this very batch raised on an earlier delivery (it is being redelivered)."""
    positions = {hit.sequence for hit in hits if hit.sequence >= 0}  # unknown positions cannot be redelivered
    return [Raised(Alert.model_validate(entry["alert"]), entry["sequence"]) for entry in state.fired
            if entry["partition"] == partition and entry["sequence"] in positions]


def _remember(state: KeyState, partition: str, raised: list[Raised]) -> None:
    for alert, sequence in raised:
        state.fired.append({"partition": partition, "sequence": sequence, "alert": alert.model_dump(mode="json")})
    del state.fired[:-FIRED_KEPT]


def _suppressed_matches(context: KeyContext, state: KeyState, fresh: list[Hit], transition: Transition) -> None:
    rule = context.rule
    for hit in fresh:
        transition.applied += 1
        state.latest_us = max(state.latest_us or hit.time_us, hit.time_us)
        if state.suppressed_until_us is not None and hit.time_us < state.suppressed_until_us:
            continue
        state.suppressed_until_us = hit.time_us + rule.suppress_us
        transition.raised.append(_raise(context, hit, count=1, first_us=hit.time_us, last_us=hit.time_us,
                                               event_ids=[hit.event_id]))


def _aggregate(context: KeyContext, state: KeyState, fresh: list[Hit], transition: Transition) -> None:
    """event_count / value_count over event-time buckets; late hits land in their own (older) buckets."""
    rule = context.rule
    width, cap = rule.bucket_us, rule.needed.saturation
    for hit in fresh:
        if state.latest_us is not None and hit.time_us < state.latest_us - rule.lateness_us:
            transition.too_late += 1
            continue
        start = hit.time_us - hit.time_us % width
        bucket = state.buckets.get(start)
        if rule.kind == "event_count" and bucket is not None and _seen_before(bucket, hit):
            transition.duplicates += 1
            continue
        transition.applied += 1
        if bucket is None:
            bucket = state.buckets[start] = Bucket(0, hit.time_us, hit.time_us)
        if rule.kind == "event_count" and len(bucket.hashes) < min(cap, THRESHOLD_IDS_KEPT):
            bucket.hashes.add(_digest(hit.event_id))
        bucket.count += 1
        bucket.first_us, bucket.last_us = min(bucket.first_us, hit.time_us), max(bucket.last_us, hit.time_us)
        sealed = _sealed(rule, state, start)
        if rule.kind == "value_count":
            for value in sorted(rule.distinct_values_of(hit.event, hit.member)):
                tag = _digest(value)
                if not sealed:
                    bucket.keep(Sampled(hit.time_us, hit.event_id, tag))
                if len(bucket.hashes) < cap:  # `cap` distinct values in one bucket already satisfy the condition
                    bucket.hashes.add(tag)
        elif not sealed:
            bucket.keep(Sampled(hit.time_us, hit.event_id, hit.event_id))
        state.latest_us = max(state.latest_us or hit.time_us, hit.time_us)
        raised = _check_windows(context, state, start, hit)
        if raised is not None:
            transition.raised.append(raised)
    _prune(rule, state)


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode(), digest_size=8).hexdigest()


def _seen_before(bucket: Bucket, hit: Hit) -> bool:
    """A threshold bucket remembers the ids it counted, up to the threshold (then the bucket alone meets
    it, so a duplicate can no longer change whether the rule fires). An id counted before came back
    with a new position: normalize published it again after a failed attempt (at-least-once fan-out)."""
    return _digest(hit.event_id) in bucket.hashes


def _check_windows(context: KeyContext, state: KeyState, start: int, hit: Hit) -> Raised | None:
    """Every window (W = 10 buckets) that contains the hit's bucket, earliest first; fire on the first full one."""
    rule = context.rule
    window, condition = rule.window_us, rule.needed
    ends = [start, *sorted(other for other in state.buckets if start < other < start + window)]
    for end in ends:
        members = [bucket for other, bucket in state.buckets.items() if end - window < other <= end]
        if rule.kind == "value_count":
            value = len(set().union(*(bucket.hashes for bucket in members)))
        else:
            value = sum(bucket.count for bucket in members)
        if not condition.holds(value):
            continue
        first = min(bucket.first_us for bucket in members)
        last = max(bucket.last_us for bucket in members)
        if state.suppressed_until_us is not None and last < state.suppressed_until_us:
            continue  # this burst already raised its alert; a window ending later may be a new one
        state.suppressed_until_us = last + rule.suppress_us
        return _raise(context, hit, count=value, first_us=first, last_us=last, event_ids=_evidence(members),
                      fired_us=last)
    return None


def _evidence(members: list[Bucket]) -> list[str]:
    """The window's earliest MAX_EVENT_IDS tags, each with its earliest hit: since every bucket keeps its
    own earliest MAX_EVENT_IDS, they are among the members' samples, whatever order the hits came in."""
    earliest: dict[str, Sampled] = {}
    for bucket in members:
        for entry in bucket.sample:
            if entry.tag not in earliest or entry < earliest[entry.tag]:
                earliest[entry.tag] = entry
    chosen = sorted(earliest.values())[:MAX_EVENT_IDS]
    return list(dict.fromkeys(entry.event_id for entry in chosen))  # one event may carry several values


def _sealed(rule: Rule, state: KeyState, start: int) -> bool:
    """No window holding this bucket can fire any more, so its sample is no longer needed.

    A window holding the bucket starting at `start` ends before `start + window`; it fires only if its
    newest event is at or after `suppressed_until`, which never decreases.
    """
    return state.suppressed_until_us is not None and start + rule.window_us <= state.suppressed_until_us


def _prune(rule: Rule, state: KeyState) -> None:
    """Drop buckets no accepted (not too late) hit can reach any more: bounded entity size."""
    if state.latest_us is None:
        return
    oldest = state.latest_us - rule.lateness_us - rule.window_us - rule.bucket_us
    for start in [start for start in state.buckets if start < oldest]:
        del state.buckets[start]
    for start, bucket in state.buckets.items():
        if bucket.sample and _sealed(rule, state, start):
            bucket.sample.clear()


def _first_seen(context: KeyContext, before: KeyState | None, hits: Sequence[Hit]) -> Transition:
    """A (key, value) entity is created once: creation after the learning period raises the alert. A value
    unseen for `forget` (its entity not yet deleted by housekeeping) is new again, and so is one whose
    entity housekeeping deleted: the alert id holds the first-seen time, so the return is a new alert.

    The alert is the first event to arrive with the value (count 1), whatever else its batch carried,
    so it is the same however the events were batched."""
    earliest = hits[0]
    newest = max(hit.time_us for hit in hits)
    if before is not None and earliest.time_us <= (before.last_us or 0) + context.rule.forget_us:
        transition = Transition(state=None, replayed=_replayed(before, context.partition, hits))
        if newest > (before.last_us or 0) + LAST_SEEN_REFRESH_US:
            transition.state = before.copy()
            transition.state.last_us = newest
        return transition
    state = KeyState(first_us=earliest.time_us, last_us=newest, latest_us=newest)
    transition = Transition(state=state, applied=len(hits))
    learning_end = context.learning_end_us
    if learning_end is not None and earliest.time_us >= learning_end:
        transition.raised.append(_raise(context, earliest, count=1, first_us=earliest.time_us,
                                        last_us=earliest.time_us, event_ids=[earliest.event_id],
                                        raised_by=f"first-seen:{earliest.time_us}"))
        _remember(state, context.partition, transition.raised)
    return transition


def _temporal(context: KeyContext, state: KeyState, fresh: list[Hit], transition: Transition) -> None:
    """temporal / temporal_ordered: the referenced rules (in their order, for temporal_ordered) all hit
    within the timespan for the same group. The hit that completes such a set raises the alert; the
    set's newest hit starts the suppression, as a window's does for counts."""
    rule = context.rule
    for hit in sorted(fresh, key=lambda item: item.sequence):
        if state.latest_us is not None and hit.time_us < state.latest_us - rule.lateness_us:
            transition.too_late += 1
            continue
        if any(step[0] == hit.member and step[2] == hit.event_id for step in state.steps):
            transition.duplicates += 1
            continue
        transition.applied += 1
        step = [hit.member, hit.time_us, hit.event_id, _stands_for(rule, hit)]
        state.steps.append(step)
        state.steps.sort(key=lambda item: (item[1], item[2], item[0]))
        state.latest_us = max(state.latest_us or hit.time_us, hit.time_us)
        chain = _in_order(rule, state.steps, step) if rule.kind == "temporal_ordered" else _together(
            rule, state.steps, step)
        if chain is None:
            continue
        first, last = chain[0][1], chain[-1][1]
        if state.suppressed_until_us is not None and last < state.suppressed_until_us:
            continue
        state.suppressed_until_us = last + rule.suppress_us
        event_ids = list(dict.fromkeys(event_id for item in chain for event_id in item[3]))
        transition.raised.append(_raise(context, hit, count=len(chain), first_us=first, last_us=last,
                                        event_ids=event_ids[:MAX_EVENT_IDS], fired_us=last))
    _prune_steps(rule, state)


def _stands_for(rule: Rule, hit: Hit) -> list[str]:
    """The events a hit stands for: itself, or those of the correlation alert it is."""
    if rule.members and rule.members[hit.member].rule is not None:
        return [str(event_id) for event_id in hit.event.get("event_ids", [])][:MAX_EVENT_IDS]
    return [hit.event_id]


def _in_order(rule: Rule, steps: list[list[Any]], step: list[Any]) -> list[list[Any]] | None:
    """The tightest chain member 0, 1, ... n-1 in time order through `step`, if it fits the timespan:
    the latest possible hit of each member before it, the earliest of each after it."""
    chain, moment = [step], step[1]
    for member in range(step[0] - 1, -1, -1):
        earlier = [item for item in steps if item[0] == member and item[1] <= moment]
        if not earlier:
            return None
        chain.insert(0, earlier[-1])
        moment = earlier[-1][1]
    moment = step[1]
    for member in range(step[0] + 1, len(rule.members)):
        later = [item for item in steps if item[0] == member and item[1] >= moment]
        if not later:
            return None
        chain.append(later[0])
        moment = later[0][1]
    return chain if chain[-1][1] - chain[0][1] <= rule.window_us else None


def _together(rule: Rule, steps: list[list[Any]], step: list[Any]) -> list[list[Any]] | None:
    """The earliest window of the timespan holding `step` in which enough members hit (default: all)."""
    moment = step[1]
    for start in sorted({item[1] for item in steps if moment - rule.window_us <= item[1] <= moment}):
        inside = [item for item in steps if start <= item[1] <= start + rule.window_us]
        chosen = {step[0]: step}
        for item in inside:
            chosen.setdefault(item[0], item)
        if rule.needed.holds(len(chosen)):
            return sorted(chosen.values(), key=lambda item: (item[1], item[2], item[0]))
    return None


def _prune_steps(rule: Rule, state: KeyState) -> None:
    """Keep the steps a later hit can still complete a set with: within reach, newest few per member."""
    if state.latest_us is None:
        return
    oldest = state.latest_us - rule.lateness_us - rule.window_us
    kept: list[list[Any]] = []
    per_member: dict[int, int] = {}
    for item in reversed(state.steps):
        if item[1] >= oldest and per_member.get(item[0], 0) < STEPS_PER_MEMBER:
            per_member[item[0]] = per_member.get(item[0], 0) + 1
            kept.append(item)
    state.steps = kept[::-1]


def _raise(context: KeyContext, hit: Hit, *, count: int, first_us: int, last_us: int, event_ids: list[str],
           fired_us: int | None = None, raised_by: str | None = None) -> Raised:
    rule = context.rule
    identity = alert_id(rule.id, context.key, hit.event_id if raised_by is None else raised_by)
    facts: dict[str, Any] = {**context.group, "count": count, "title": rule.spec.title,
                             "first_seen": _format(first_us), "last_seen": _format(last_us)}
    return Raised(Alert(
        alert_id=identity, rule_id=rule.id, title=rule.spec.title, severity=rule.spec.level,
        time=from_us(fired_us if fired_us is not None else hit.time_us), group=context.group, count=count,
        first_seen=from_us(first_us), last_seen=from_us(last_us), event_ids=event_ids[-MAX_EVENT_IDS:],
        summary=render_summary(rule.spec.summary, rule.spec.title, facts, hit.event),
        tags=rule.spec.tags, references=rule.spec.references, falsepositives=rule.spec.falsepositives,
        author=", ".join(rule.spec.author), stormwatch_version=__version__,
    ), hit.sequence)


def _format(micros: int) -> str:
    return from_us(micros).strftime("%Y-%m-%d %H:%M:%S UTC")


def match_alert(context: KeyContext, hit: Hit) -> Alert:
    """A stateless match rule: one alert per matching event, its id derived from the event's id."""
    return _raise(context, hit, count=1, first_us=hit.time_us, last_us=hit.time_us, event_ids=[hit.event_id]).alert
