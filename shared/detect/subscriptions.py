"""The subscription catalog: id → name and environment, kept as data in `rules/lists/subscriptions.yaml`.

One file names the estate for people (the dashboard shows names) and for rules: the loader derives one
list per environment, `production_subscriptions`, `staging_subscriptions`, `development_subscriptions`,
so a rule filters on environment with the usual `filters: [{field: subscription_id, in: ...}]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

CATALOG_LIST = "subscriptions"  # rules/lists/subscriptions.yaml
Environment = Literal["production", "staging", "development"]
ENVIRONMENTS: tuple[Environment, ...] = ("production", "staging", "development")


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    environment: Environment


class SubscriptionCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    subscriptions: dict[str, Subscription] = Field(min_length=1, description="Lower-case subscription GUID → entry")

    def name_of(self, subscription_id: str) -> str:
        known = self.subscriptions.get(subscription_id.lower())
        return subscription_id if known is None else known.name


def environment_lists(catalog: SubscriptionCatalog) -> dict[str, frozenset[str]]:
    """The rule lists the catalog stands for (an environment without subscriptions is an empty list)."""
    return {f"{environment}_subscriptions": frozenset(subscription_id.lower() for subscription_id, entry
                                                      in catalog.subscriptions.items()
                                                      if entry.environment == environment)
            for environment in ENVIRONMENTS}


@dataclass(frozen=True)
class EnvironmentList:
    """An environment's subscriptions as a rule filter sees them: a subscription the catalog does not
    list belongs to the environment chosen for unknown ones (STORMWATCH_UNKNOWN_SUBSCRIPTIONS)."""

    members: frozenset[str]
    known: frozenset[str]
    takes_unknown: bool

    def __contains__(self, value: object) -> bool:
        return value in self.members or (self.takes_unknown and value not in self.known)


def filter_lists(catalog: SubscriptionCatalog, unknown: str) -> dict[str, EnvironmentList]:
    """The catalog's environment lists for rule filters; `unknown`: the environment of unlisted ids."""
    known = frozenset(subscription_id.lower() for subscription_id in catalog.subscriptions)
    return {name: EnvironmentList(members, known, name == f"{unknown}_subscriptions")
            for name, members in environment_lists(catalog).items()}


def load_catalog(rules_dir: Path) -> SubscriptionCatalog:
    """The catalog beside the rules; an absent file is an empty catalog (ids are shown as they are)."""
    path = rules_dir / "lists" / f"{CATALOG_LIST}.yaml"
    if not path.is_file():
        return SubscriptionCatalog.model_construct(subscriptions={})
    return SubscriptionCatalog.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
