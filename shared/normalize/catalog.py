"""Offline context kept as data: operation descriptions and the common-event classification.

Both tables are JSON files under `shared/normalize/data/` that a security engineer can read and extend without
touching Python; lookups are cached because operations repeat endlessly in real traffic.

An operation's description comes from the first of three sources that has one: the shipped catalog
(`operations.json`, reviewed wording for what analysts care about), Microsoft's full catalog as the app last
stored it (`use_stored_operations`, refreshed daily by `catalog_sync`), and a description derived from the id
itself (provider, resource types, verb) with the words in `vocabulary.json`, so no operation goes undescribed.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict

DATA_DIR = Path(__file__).parent / "data"
OPERATIONS_FILE = DATA_DIR / "operations.json"
CLASSIFICATION_FILE = DATA_DIR / "classification.json"
VOCABULARY_FILE = DATA_DIR / "vocabulary.json"


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


def parse_operations(document: Any) -> dict[str, OperationInfo]:
    """`{"operations": {id: {display_name, description}}}` keyed by upper-cased id; ValueError when it is not."""
    operations = document.get("operations") if isinstance(document, dict) else None
    if not isinstance(operations, dict):
        raise ValueError("no `operations` object")
    return {str(name).upper(): OperationInfo.model_validate(info) for name, info in operations.items()}


@lru_cache(maxsize=1)
def load_operations(path: Path = OPERATIONS_FILE) -> dict[str, OperationInfo]:
    return parse_operations(orjson.loads(path.read_bytes()))


@lru_cache(maxsize=1)
def load_classification(path: Path = CLASSIFICATION_FILE) -> tuple[ClassificationRule, ...]:
    document = orjson.loads(path.read_bytes())
    return tuple(ClassificationRule.model_validate(rule) for rule in document["rules"])


class _Stored:
    """Microsoft's catalog as the app last stored it; empty until `use_stored_operations` is called."""

    operations: dict[str, OperationInfo] = {}  # noqa: RUF012 - replaced whole, never mutated


def use_stored_operations(operations: dict[str, OperationInfo]) -> None:
    """Describe from this catalog from now on (behind the shipped one) and forget cached descriptions."""
    _Stored.operations = operations
    operation_description.cache_clear()
    vocabulary.cache_clear()


def operation_info(operation: str | None) -> OperationInfo | None:
    """Catalog entry for an operation id in any casing, or None when neither catalog knows it."""
    if not operation:
        return None
    key = operation.upper()
    return load_operations().get(key) or _Stored.operations.get(key)


@lru_cache(maxsize=16384)
def operation_description(operation: str | None) -> str | None:
    """The catalog's words for an operation, or words derived from its id; None only without an id."""
    if not operation or operation.isspace():
        return None
    info = operation_info(operation)
    return (info and (info.description or info.display_name)) or derived_description(operation)


class Vocabulary(NamedTuple):
    """Words to read an upper-cased id with: each word by its upper-case spelling, as it is written."""

    providers: dict[str, str]
    resource_types: dict[str, str]
    words: dict[str, str]


_LETTERS = re.compile(r"[A-Za-z]{4,}")
_WORD = re.compile(r"[A-Za-z]+")
_CAMEL_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")
_LONGEST_WORD = 24
# Past this a token stays one word: the cover below costs time and memory quadratic in the token's length,
# and a record may carry an operation name of any size (found by the hostile-body property test: OOM).
_LONGEST_TOKEN = 96
_VERBS = {"WRITE": "Create or update", "DELETE": "Delete", "READ": "Read"}


@lru_cache(maxsize=1)
def vocabulary(path: Path = VOCABULARY_FILE) -> Vocabulary:
    """The shipped words, plus those of every display name both catalogs hold (ARM's names are words too)."""
    document = orjson.loads(path.read_bytes())
    words: dict[str, str] = {}
    for catalog in (_Stored.operations, load_operations()):
        for info in catalog.values():
            words.update((word.upper(), word.lower()) for word in _LETTERS.findall(info.display_name or "")
                         if not word.isupper())
    words.update((word.upper(), word) for word in document["words"])
    return Vocabulary(document["providers"], document["resource_types"], words)


def _known(piece: str, words: dict[str, str]) -> str | None:
    """A known word, or the plural of one (`POLICIES`, `ADDRESSES`, `VMS`), as written."""
    if piece in words:
        return words[piece]
    if piece.endswith("IES") and piece[:-3] + "Y" in words:
        return words[piece[:-3] + "Y"][:-1] + "ies"
    if piece.endswith("ES") and piece[:-2] in words:
        return words[piece[:-2]] + "es"
    if piece.endswith("S") and piece[:-1] in words:
        return words[piece[:-1]] + "s"
    if piece.endswith("ING") and piece[:-3] in words:
        return words[piece[:-3]] + "ing"
    return None


def split_words(token: str, words: dict[str, str]) -> list[str]:
    """`LISTCLUSTERADMINCREDENTIAL` → list, cluster, admin, credential.

    The cheapest cover of the letters: a known word costs 1, a run of letters no word covers 2.5 plus 0.1 a
    letter, so known words win, and an unknown name stays one lower-case word rather than being cut where a
    short known word happens to sit inside it.
    """
    if len(token) > _LONGEST_TOKEN:
        return [token.lower()]
    token = token.upper()
    size = len(token)
    best: list[tuple[float, list[str]] | None] = [(0.0, [])] + [None] * size
    for start in range(size):
        here = best[start]
        if here is None:
            continue
        cost, found = here
        steps = [(end, 2.5 + 0.1 * (end - start), token[start:end].lower()) for end in range(start + 1, size + 1)]
        for end in range(start + 2, min(size, start + _LONGEST_WORD) + 1):
            word = _known(token[start:end], words)
            if word is not None:
                steps.append((end, 1.0, word))
        for end, step_cost, word in steps:
            there = best[end]
            if there is None or cost + step_cost < there[0]:
                best[end] = (cost + step_cost, [*found, word])
    return (best[size] or (0.0, []))[1]


def _camel(words: list[str]) -> str:
    """ARM's spelling of a type or provider name: `publicIPAddresses`."""
    return "".join(word if word.isupper() else word.capitalize() for word in words)


def _singular(phrase: str) -> str:
    if phrase.endswith("ies"):
        return phrase[:-3] + "y"
    if phrase.endswith(("sses", "xes")):
        return phrase[:-2]
    if phrase.endswith("s") and not phrase.endswith(("ss", "us", "is")):
        return phrase[:-1]
    return phrase


def _sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text[:1].upper() + text[1:]


# Azure's longest operation ids are under 100 characters; past this one is not described word by word.
MAX_DESCRIBED_CHARS = 512
TOO_LONG_TO_DESCRIBE = "An operation id too long to describe (as logged)"


def derived_description(operation: str) -> str:
    """Words for an id no catalog knows: what is done, to which resource type, of which provider.

    `MICROSOFT.AUTHORIZATION/LOCKS/DELETE` → "Delete management lock (Microsoft.Authorization/locks)";
    an Entra activity ("UPDATE CONDITIONAL ACCESS POLICY") keeps its own words, as a sentence.
    """
    if len(operation) > MAX_DESCRIBED_CHARS:  # the word cover costs per token: a hostile id could take minutes
        return TOO_LONG_TO_DESCRIBE
    known = vocabulary()
    if "/" not in operation:
        if " " in operation.strip():  # an Entra activity's display name, already in words
            text = _WORD.sub(lambda word: known.words.get(word[0].upper(), word[0].lower()), operation.strip())
            return f"{text[:1].upper()}{text[1:]} (Entra ID activity)"
        if operation.isupper():
            words = [word for part in _SEPARATORS.split(operation) for word in split_words(part, known.words)]
        else:  # written in camel case (`ARM_AnomalousServiceOperation`): the capitals say where words start
            words = [known.words.get(word.upper(), word.lower()) for word in _CAMEL_WORD.findall(operation)]
        return f"{_sentence(words) or operation.strip()} (as logged)"
    parts = [segment for segment in operation.upper().split("/") if segment]
    if not parts:
        return f"{operation} (as logged)"
    provider, *segments = parts
    verb = segments.pop() if segments else ""
    doing = _VERBS.get(verb)
    if doing is None:
        action = segments.pop() if verb == "ACTION" and segments else verb
        doing = _sentence(split_words(action, known.words))
    namespace = known.providers.get(provider) or ".".join(part.capitalize() for part in provider.split("."))
    if not segments:
        return f"{doing} ({namespace})"
    type_words = [split_words(segment, known.words) for segment in segments]
    path = "/".join(_camel(words)[:1].lower() + _camel(words)[1:] for words in type_words)
    noun = known.resource_types.get("/".join([provider, *segments])) or _singular(
        " ".join(word if word.isupper() else word.lower() for word in type_words[-1]))
    joiner = " " if verb in _VERBS else " on "
    return f"{doing}{joiner}{noun} ({namespace}/{path})"


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
