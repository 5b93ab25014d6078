"""The shape of a rule file (one YAML file per rule) and of a list file, validated with pydantic.

A rule file is a Sigma rule: Sigma's own attributes (title, id, status, level, logsource, tags,
author, ...) are accepted as SigmaHQ writes them, so its rules drop in unmodified. Our additions are
custom attributes Sigma allows (docs/detect.md): `kind`, `group-by`, `timespan`, `condition`
(aggregations, shaped like Sigma correlation rules), `filters`, `suppress`, `summary`, `tests`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

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
Kind = Literal["match", "threshold", "distinct", "first_seen"]
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


class Condition(_Strict):
    """Sigma correlation condition: at least `gte` events (threshold) or distinct `field` values."""

    gte: int = Field(ge=1, le=100_000)
    field: str | None = None


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


class RuleFile(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                    description="Lower-case letters, digits and dashes (a Sigma UUID fits): the state's PartitionKey")
    title: str = Field(min_length=1, max_length=256)
    description: str = ""
    level: Severity = Field(validation_alias=AliasChoices("level", "severity"),
                            description="The alert's severity (`severity`, our older name, is read as level)")
    status: Status | None = None
    kind: Kind = "match"
    logsource: LogSource | None = None
    detection: dict[str, Any]
    # Sigma's metadata: carried into alerts (author, tags, references, falsepositives) or kept as written.
    name: str | None = None
    author: TextList = Field(default_factory=list)
    date: str | None = None
    modified: str | None = None
    license: str | None = None
    related: list[Related] = Field(default_factory=list)
    falsepositives: TextList = Field(default_factory=list)
    taxonomy: str | None = None
    scope: list[str] = Field(default_factory=list)
    filters: list[ListFilter] = Field(default_factory=list)
    group_by: list[str] = Field(default_factory=list, alias="group-by")
    fields: list[str] = Field(default_factory=list, description="first_seen: the values that must be new "
                              "(for other kinds, Sigma's list of fields worth showing)")
    timespan: Duration | None = None
    condition: Condition | None = None
    lateness: Duration = Field(timedelta(hours=1), description="How late an event may arrive and still count")
    learning: Duration = Field(timedelta(days=2), description="first_seen: record only, from the first event")
    forget: Duration = Field(timedelta(days=90), description="first_seen: a value unseen this long is new again")
    suppress: Duration | None = Field(None, description="Quiet period per group key after an alert")
    summary: str | None = Field(None, description="One sentence; {field} placeholders")
    references: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    tests: list[RuleTest] = Field(default_factory=list)


class ValueList(_Strict):
    """A list kept as data (`rules/lists/<name>.yaml`), e.g. the production subscriptions."""

    description: str = ""
    values: list[str | int] = Field(min_length=1)
