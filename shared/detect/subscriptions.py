"""The subscription catalog: id → name and environment, kept as data in `rules/lists/subscriptions.yaml`.

One file names the estate for people (the dashboard shows names) and for rules: the loader derives one
list per environment, `production_subscriptions`, `staging_subscriptions`, `development_subscriptions`,
so a rule filters on environment with the usual `filters: [{field: subscription_id, in: ...}]`.
"""

from __future__ import annotations

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


def load_catalog(rules_dir: Path) -> SubscriptionCatalog:
    """The catalog beside the rules; an absent file is an empty catalog (ids are shown as they are)."""
    path = rules_dir / "lists" / f"{CATALOG_LIST}.yaml"
    if not path.is_file():
        return SubscriptionCatalog.model_construct(subscriptions={})
    return SubscriptionCatalog.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
