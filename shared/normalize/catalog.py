"""Offline context kept as data: operation descriptions and the common-event classification.

Both tables are JSON files under `shared/normalize/data/` that a security engineer can read and extend without
touching Python; lookups are cached because operations repeat endlessly in real traffic.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict

DATA_DIR = Path(__file__).parent / "data"
OPERATIONS_FILE = DATA_DIR / "operations.json"
CLASSIFICATION_FILE = DATA_DIR / "classification.json"


class OperationInfo(BaseModel):
    """What the catalog says about one operation id."""

    model_config = ConfigDict(frozen=True)

    display_name: str | None = None
    description: str | None = None


class ClassificationRule(BaseModel):
    """One row of the classification table; `*` matches anything, operation is a glob."""

    model_config = ConfigDict(frozen=True)

    source: str = "*"
    operation: str = "*"
    action: str = "*"
    result: str = "*"
    category: str = "*"
    status_code: str = "*"
    common_event: str


@lru_cache(maxsize=1)
def load_operations(path: Path = OPERATIONS_FILE) -> dict[str, OperationInfo]:
    document = orjson.loads(path.read_bytes())
    return {name.upper(): OperationInfo.model_validate(info)
            for name, info in document["operations"].items()}


@lru_cache(maxsize=1)
def load_classification(path: Path = CLASSIFICATION_FILE) -> tuple[ClassificationRule, ...]:
    document = orjson.loads(path.read_bytes())
    return tuple(ClassificationRule.model_validate(rule) for rule in document["rules"])


def operation_info(operation: str | None) -> OperationInfo | None:
    """Catalog entry for an operation id in any casing, or None when the catalog does not know it."""
    if not operation:
        return None
    return load_operations().get(operation.upper())


@lru_cache(maxsize=16384)
def operation_description(operation: str | None) -> str | None:
    info = operation_info(operation)
    if info is None:
        return None
    return info.description or info.display_name


def _matches(pattern: str, value: str | None) -> bool:
    if pattern == "*":
        return True
    return value is not None and pattern.lower() == value.lower()


def classify(source: str, operation: str | None, *, action: str, result: str | None,
             category: str | None = None, status_code: str | None = None) -> str:
    """The common event of the first matching table row, `Other` when none matches."""
    return common_event(source, operation, action, result, category, status_code)


@lru_cache(maxsize=16384)
def common_event(source: str, operation: str | None, action: str, result: str | None,  # noqa: PLR0917
                 category: str | None, status_code: str | None) -> str:
    """`classify` with positional arguments: normalize calls it per record, and keyword arguments
    make the cache lookup several times slower."""
    upper_operation = (operation or "").upper()
    for rule in load_classification():
        if (_matches(rule.source, source) and _matches(rule.action, action)
                and _matches(rule.result, result) and _matches(rule.category, category)
                and _matches(rule.status_code, status_code)
                and (rule.operation == "*" or fnmatchcase(upper_operation, rule.operation))):
            return rule.common_event
    return "Other"
