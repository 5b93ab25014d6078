"""The shape of a rule file and of a list file, validated with pydantic.

A rule file holds Sigma documents: rules and correlation rules, with Sigma's own attributes (title, id,
name, status, level, logsource, tags, author, ...) accepted as SigmaHQ writes them, so its rules drop
in unmodified. What Sigma has no word for is a custom attribute, which Sigma allows (docs/detect.md):
`filters`, `group-by` and `suppress` of a rule, `first_seen`, `lateness`, `summary`, `tests`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """`30s`, `10m`, `1h`, `2d` (Sigma's timespan notation)."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("a duration is a whole number and a unit: 30s, 10m, 1h or 2d")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Severity = Literal["informational", "low", "medium", "high", "critical"]
# What a loaded rule does: Sigma's correlation types, plus match and first_seen (our extension).
RuleKind = Literal["match", "first_seen", "event_count", "value_count", "temporal", "temporal_ordered"]
Status = Literal["stable", "test", "experimental", "deprecated", "unsupported"]
# A rule without a status is ours (always runs); Sigma rules run when their status is in the setting.
DEFAULT_STATUSES: tuple[str, ...] = ("stable", "test")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ListFilter(_Strict):
    """Keep an event only if a field's value is (`in`) or is not (`not_in`) in a named list."""

    field: str
    in_list: str | None = Field(None, alias="in")
    not_in: str | None = None

    @model_validator(mode="after")
    def _one_list(self) -> ListFilter:
        if (self.in_list is None) == (self.not_in is None):
            raise ValueError("a filter names exactly one list, with `in` or `not_in`")
        return self


_COUNT = Field(None, ge=0, le=100_000)


class Condition(_Strict):
    """Sigma correlation condition: how many events (event_count), distinct `field` values (value_count)
    or referenced rules (temporal) a window must hold. Several operators are a range (all must hold)."""

    gt: int | None = _COUNT
    gte: int | None = _COUNT
    lt: int | None = _COUNT
    lte: int | None = _COUNT
    eq: int | None = _COUNT
    field: str | None = None

    @model_validator(mode="after")
    def _some_operator(self) -> Condition:
        if all(bound is None for bound in (self.gt, self.gte, self.lt, self.lte, self.eq)):
            raise ValueError("a condition names at least one of gt, gte, lt, lte, eq")
        if not any(self.holds(value) for value in range(self.saturation + 1)):
            raise ValueError("no count satisfies this condition")
        return self

    def holds(self, value: int) -> bool:
        return ((self.gt is None or value > self.gt) and (self.gte is None or value >= self.gte)
                and (self.lt is None or value < self.lt) and (self.lte is None or value <= self.lte)
                and (self.eq is None or value == self.eq))

    @property
    def saturation(self) -> int:
        """The count past which the answer no longer changes: counting further is not needed."""
        bounds = [self.gte or 0, (self.gt or 0) + 1, *(value + 1 for value in (self.lt, self.lte, self.eq)
                                                      if value is not None)]
        return max(1, *bounds)


CorrelationType = Literal["event_count", "value_count", "temporal", "temporal_ordered"]


class Correlation(_Strict):
    """Sigma's `correlation` section: which rules (by name or id), per which fields, within what time."""

    type: CorrelationType
    rules: list[str] = Field(min_length=1, max_length=20)
    group_by: list[str] = Field(default_factory=list, alias="group-by")
    timespan: Duration
    condition: Condition | None = None
    generate: bool = Field(False, description="The referenced rules also raise their own alerts")
    aliases: dict[str, dict[str, str]] = Field(default_factory=dict,
                                               description="group-by name → {rule name: its field}")


class RuleTest(_Strict):
    """Events fed to the rule as one batch, and how many alerts they must raise."""

    name: str = Field(min_length=1)
    alerts: int = Field(ge=0)
    events: list[dict[str, Any]] = Field(min_length=1)


class LogSource(BaseModel):
    """Sigma's `logsource`: product azure and a service route the rule (`shared.detect.rules.fields`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    product: str | None = None
    service: str | None = None
    category: str | None = None
    definition: str | None = None


class Related(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    type: str


def _text_list(value: Any) -> Any:
    """Sigma writes `author` and `falsepositives` as text or as a list of texts."""
    return [value] if isinstance(value, str) else value


TextList = Annotated[list[str], BeforeValidator(_text_list)]


class FirstSeen(_Strict):
    """Our extension (Sigma has no word for it): alert when the values of `fields` were never seen for
    the rule's `group-by` key, once `learning` has passed; a value unseen for `forget` is new again."""

    fields: list[str] = Field(min_length=1, max_length=10)
    learning: Duration = Field(timedelta(days=2), description="Record only, from the rule's first event")
    forget: Duration = Field(timedelta(days=90), description="A value unseen this long is new again")


OLD_FORMAT = "`kind` belongs to the old rule format: `python -m shared rules convert` turns it into Sigma"


class RuleFile(_Strict):
    """One Sigma document: a rule (`detection`) or a correlation (`correlation`), plus our custom attributes
    (`filters`, `group-by` and `suppress` of a rule, `first_seen`, `lateness`, `summary`, `tests`)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                    description="Sigma's UUID (lower case); the rule's id in state and alerts unless it has a name")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
                             description="Sigma's unique name: how correlations refer to the rule, and its id "
                                         "in state and alerts (our rules keep their readable slug here)")
    title: str = Field(min_length=1, max_length=256)
    description: str = ""
    level: Severity
    status: Status | None = None
    logsource: LogSource | None = None
    detection: dict[str, Any] | None = None
    correlation: Correlation | None = None
    # Sigma's metadata: carried into alerts (author, tags, references, falsepositives) or kept as written.
    author: TextList = Field(default_factory=list)
    date: str | None = None
    modified: str | None = None
    license: str | None = None
    related: list[Related] = Field(default_factory=list)
    falsepositives: TextList = Field(default_factory=list)
    taxonomy: str | None = None
    scope: list[str] = Field(default_factory=list)
    fields: list[str] = Field(default_factory=list, description="Sigma's list of fields worth showing")
    references: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    # Custom attributes (docs/detect.md).
    filters: list[ListFilter] = Field(default_factory=list)
    group_by: list[str] = Field(default_factory=list, alias="group-by",
                                description="A rule's key for `suppress` and `first_seen` (a correlation "
                                            "says its own in its correlation section)")
    first_seen: FirstSeen | None = None
    lateness: Duration = Field(timedelta(hours=1), description="How late an event may arrive and still count")
    suppress: Duration | None = Field(None, description="Quiet period per group key after an alert")
    summary: str | None = Field(None, description="One sentence; {field} placeholders")
    tests: list[RuleTest] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _not_the_old_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" in data:
            raise ValueError(OLD_FORMAT)
        return data

    @model_validator(mode="after")
    def _detection_or_correlation(self) -> RuleFile:
        if (self.detection is None) == (self.correlation is None):
            raise ValueError("a rule has either a detection or a correlation section")
        return self

    @property
    def rule_id(self) -> str:
        return self.name or self.id


class ValueList(_Strict):
    """A list kept as data (`rules/lists/<name>.yaml`), e.g. the production subscriptions."""

    description: str = ""
    values: list[str | int] = Field(min_length=1)
