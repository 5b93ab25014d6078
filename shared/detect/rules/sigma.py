"""Sigma detection syntax compiled to plain predicates over normalized events (dicts).

Compiling once at load time keeps the hot path to a few closure calls per event and rule. Semantics
follow Sigma: a selection map ANDs its fields, a list of maps ORs them, a list of values ORs them
(`|all` ANDs them). Differences on purpose: every comparison is case-insensitive (`|re` included),
numbers and booleans compare as their text (`4` matches `"4"`), and a path reaches through arrays (and
JSON text) so that `targets.type: Group` matches when any target is a group.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from shared.detect.rules.errors import RuleError
from shared.detect.rules.regex import Matcher, rule_regex

Event = Mapping[str, Any]
Predicate = Callable[[Event], bool]
Getter = Callable[[Event], list[Any]]

# Sigma's value modifiers, by role: an operator (at most one), transformations of the expected value
# (applied in the order written), and flags.
OPERATORS = frozenset({"contains", "startswith", "endswith", "re", "cidr", "exists", "lt", "lte", "gt", "gte",
                       "fieldref"})
TRANSFORMS = frozenset({"base64", "base64offset", "windash", "wide", "utf16le", "utf16be", "utf16"})
FLAGS = frozenset({"all", "cased", "i", "m", "s", "ignorecase", "multiline", "dotall"})
MODIFIERS = OPERATORS | TRANSFORMS | FLAGS
Resolve = Callable[[str], Getter]
_MISSING = object()


def compile_path(path: str) -> Getter:
    """A dotted path (`details.country`, `raw.properties.status.errorCode`) → every value it reaches.

    Keys are looked up exactly first, then case-insensitively (raw records disagree on key casing).
    Lists anywhere on the way, and at the end, contribute each element. A path that continues into
    JSON text (the Activity Log's `requestbody`, `responseBody`, `policies`) continues into its parse.
    """
    parts = tuple(path.split("."))
    if not all(parts):
        raise RuleError(f"field path {path!r} has an empty segment")
    if len(parts) == 1:
        name = parts[0]

        def top_level(event: Event) -> list[Any]:
            value = event.get(name, _MISSING)
            if value is _MISSING:
                value = _get_folded(event, name)
            if value is _MISSING:
                return []
            return list(value) if isinstance(value, list) else [value]

        return top_level

    def nested(event: Event) -> list[Any]:
        found: list[Any] = []
        _collect(event, parts, 0, found)
        return found

    return nested


def _get_folded(node: Mapping[str, Any], name: str) -> Any:
    folded = name.casefold()
    for key, value in node.items():
        if key.casefold() == folded:
            return value
    return _MISSING


def _collect(node: Any, parts: tuple[str, ...], index: int, found: list[Any]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect(item, parts, index, found)
        return
    if index == len(parts):
        found.append(node)
        return
    if isinstance(node, str) and node[:1] in ("{", "["):
        try:
            node = orjson.loads(node)
        except orjson.JSONDecodeError:
            return
        _collect(node, parts, index, found)
        return
    if isinstance(node, Mapping):
        child = node.get(parts[index], _MISSING)
        if child is _MISSING:
            child = _get_folded(node, parts[index])
        if child is not _MISSING:
            _collect(child, parts, index + 1, found)


def as_text(value: Any) -> str:
    """The case-folded text a value is compared as: numbers and booleans as JSON writes them."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value is None:
        return ""
    if isinstance(value, (Mapping, list)):  # a nested object compares as its JSON text (Log Analytics shows it so)
        return _json_text(value).casefold()
    return str(value).casefold()


def _json_text(value: Mapping[str, Any] | list[Any]) -> str:
    """A nested value as JSON text; empty past the 254 levels orjson writes (JSON text inside a record, such
    as a request body, may be read up to 1,024 deep): such a value matches nothing rather than raising."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return ""


def compile_detection(detection: Mapping[str, Any], resolve: Resolve = compile_path) -> Predicate:
    """`detection:` (named selections + `condition`) → one predicate. Raises RuleError with a loc.

    `resolve` turns a field name into a getter (Sigma rules resolve names through their log source's
    field map, `shared.detect.rules.fields`); by default names are paths into the normalized event.
    """
    if not isinstance(detection, Mapping):
        raise RuleError("detection must be a mapping of named selections and a condition")
    selections = {name: body for name, body in detection.items() if name not in ("condition", "timeframe")}
    if "condition" not in detection:
        raise RuleError("detection has no condition", ("condition",))
    if not selections:
        raise RuleError("detection has no named selection")
    compiled: dict[str, Predicate] = {}
    for name, body in selections.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
            raise RuleError(f"selection name {name!r} must be a word (letters, digits, _ or -)", (str(name),))
        compiled[name] = _compile_selection(body, (name,), resolve)
    condition = detection["condition"]
    if isinstance(condition, list):
        parsed = [_parse_condition(item, compiled, ("condition", index), _PREDICATES)
                  for index, item in enumerate(condition)]
        return _any_of(parsed)
    return _parse_condition(condition, compiled, ("condition",), _PREDICATES)


# What a selection or condition requires of one field: the set of (case-folded) values an event must hold
# there to match, or None when any value could do. The rule index (`shared.detect.rules.index`) tries a
# rule only on events whose value is in the set.
Required = frozenset[str] | None


def required_values(detection: Mapping[str, Any], field: str) -> Required:
    """The values `field` must hold for the (already compiled, so valid) detection to match, if known."""
    selections = {name: _required_of(body, field) for name, body in detection.items()
                  if name not in ("condition", "timeframe")}
    condition = detection["condition"]
    conditions = condition if isinstance(condition, list) else [condition]
    algebra = _Algebra[Required](_required_all, _required_any, lambda inner: None)
    found = [_parse_condition(item, selections, ("condition",), algebra) for item in conditions]
    return _required_any(found)


def _required_of(body: Any, field: str) -> Required:
    if isinstance(body, Mapping):
        values = body.get(field, _MISSING)
        if values is _MISSING:
            return None
        values = values if isinstance(values, list) else [values]
        if not values or not all(isinstance(value, (str, int, float)) and not isinstance(value, bool)
                                 and not any(mark in str(value) for mark in "*?\\") for value in values):
            return None  # null, wildcards, escapes: no plain set of values
        return frozenset(as_text(value) for value in values)
    if isinstance(body, list) and body and all(isinstance(item, Mapping) for item in body):
        return _required_any([_required_of(item, field) for item in body])
    return None


def _required_all(parts: Sequence[Required]) -> Required:
    known = [part for part in parts if part is not None]
    return frozenset.intersection(*known) if known else None


def _required_any(parts: Sequence[Required]) -> Required:
    known = [part for part in parts if part is not None]
    if not parts or len(known) < len(parts):
        return None
    return frozenset().union(*known)


def _compile_selection(body: Any, loc: tuple[str | int, ...], resolve: Resolve) -> Predicate:
    if isinstance(body, Mapping):
        if not body:
            raise RuleError("a selection needs at least one field", loc)
        return _all_of([_compile_field(str(key), value, (*loc, str(key)), resolve) for key, value in body.items()])
    if isinstance(body, list) and body and all(isinstance(item, Mapping) for item in body):
        return _any_of([_compile_selection(item, (*loc, index), resolve) for index, item in enumerate(body)])
    if isinstance(body, (str, int, float)) and not isinstance(body, bool):
        return _keywords([body], loc)
    if isinstance(body, list) and body and all(isinstance(item, (str, int, float)) for item in body):
        return _keywords(body, loc)
    raise RuleError("a selection is a map of fields, a list of such maps, or a list of keywords", loc)


def _keywords(words: Sequence[Any], loc: tuple[str | int, ...]) -> Predicate:
    """Sigma keywords: the event matches when any text in it (normalized fields or raw record) holds a word."""
    tests = [_value_test("contains", word, loc) for word in words]

    def has_keyword(event: Event) -> bool:
        texts: list[Any] = []
        _leaves(event, texts)
        return any(test(texts) for test in tests)

    return has_keyword


def _leaves(node: Any, found: list[Any]) -> None:
    if isinstance(node, Mapping):
        for value in node.values():
            _leaves(value, found)
    elif isinstance(node, list):
        for value in node:
            _leaves(value, found)
    elif isinstance(node, str):
        found.append(node)


def _compile_field(key: str, expected: Any, loc: tuple[str | int, ...], resolve: Resolve) -> Predicate:
    path, *modifiers = key.split("|")
    unknown = [modifier for modifier in modifiers if modifier not in MODIFIERS]
    if unknown:
        raise RuleError(f"unknown modifier {unknown[0]!r} (supported: {', '.join(sorted(MODIFIERS))})", loc)
    try:
        values_of = resolve(path)
    except RuleError as error:
        raise RuleError(error.message, loc) from None
    operators = [modifier for modifier in modifiers if modifier in OPERATORS]
    if len(operators) > 1:
        raise RuleError(f"modifiers {'|'.join(operators)} cannot be combined", loc)
    operator = operators[0] if operators else None
    values = expected if isinstance(expected, list) else [expected]
    if not values:
        raise RuleError("an empty list of values matches nothing", loc)
    if any(isinstance(value, (Mapping, list)) for value in values):
        raise RuleError("values must be scalars (text, numbers, booleans or null)", loc)
    if operator == "exists":
        return _exists(values_of, values, loc)
    if operator == "fieldref":
        return _field_reference(values_of, values, loc, resolve)
    transforms = [modifier for modifier in modifiers if modifier in TRANSFORMS]
    options = _Options(cased="cased" in modifiers,
                       regex_flags=frozenset(modifier[0] for modifier in modifiers
                                             if modifier in ("i", "m", "s", "ignorecase", "multiline", "dotall")))
    tests = [_any_variant([_value_test(operator, variant, loc, options)
                           for variant in _transformed(value, transforms, operator, loc)])
             for value in values]
    if len(tests) == 1:  # the common case, without a generator per event
        only = tests[0]
        return lambda event: only(values_of(event))
    combine = all if "all" in modifiers else any

    def field_matches(event: Event) -> bool:
        found = values_of(event)
        return combine(test(found) for test in tests)

    return field_matches


ValueTest = Callable[[list[Any]], bool]


@dataclass(frozen=True)
class _Options:
    cased: bool = False
    regex_flags: frozenset[str] = frozenset()


def _any_variant(tests: list[ValueTest]) -> ValueTest:
    if len(tests) == 1:
        return tests[0]
    return lambda found: any(test(found) for test in tests)


def _exists(values_of: Getter, values: list[Any], loc: tuple[str | int, ...]) -> Predicate:
    if len(values) != 1 or not isinstance(values[0], bool):
        raise RuleError("|exists takes true or false", loc)
    wanted = values[0]
    return lambda event: any(value is not None for value in values_of(event)) is wanted


def _field_reference(values_of: Getter, values: list[Any], loc: tuple[str | int, ...],
                     resolve: Resolve) -> Predicate:
    """`a|fieldref: b`: a holds one of the values b holds in the same event."""
    try:
        others = [resolve(str(value)) for value in values]
    except RuleError as error:
        raise RuleError(error.message, loc) from None

    def same(event: Event) -> bool:
        mine = {as_text(value) for value in values_of(event) if value is not None}
        return any(as_text(value) in mine for other in others for value in other(event) if value is not None)

    return same


# |windash: a command-line flag's leading - or / in every form Windows accepts.
_DASHES = ("-", "/", "\u2013", "\u2014", "\u2015")
_FLAG_DASH = re.compile(r"(^|\s)[-/]")


def _transformed(value: Any, transforms: list[str], operator: str | None,
                 loc: tuple[str | int, ...]) -> list[Any]:
    """The expected value after Sigma's transformation modifiers: every variant that may appear."""
    variants: list[Any] = [value]
    encoding = "utf-8"
    for transform in transforms:
        if value is None:
            raise RuleError(f"|{transform} needs a value, not null", loc)
        if transform in ("wide", "utf16le"):
            encoding = "utf-16-le"
        elif transform == "utf16be":
            encoding = "utf-16-be"
        elif transform == "utf16":
            encoding = "utf-16"
        elif transform == "windash":
            variants = [_FLAG_DASH.sub(rf"\g<1>{dash}", str(variant)) for variant in variants for dash in _DASHES]
        elif transform == "base64":
            variants = [base64.b64encode(str(variant).encode(encoding)).decode() for variant in variants]
        else:  # base64offset: the three encodings of the value at each offset in a longer text
            if operator != "contains":
                raise RuleError("|base64offset is used with |contains", loc)
            variants = [shifted for variant in variants for shifted in _base64_offsets(str(variant), encoding)]
    return variants


def _base64_offsets(text: str, encoding: str) -> list[str]:
    data = text.encode(encoding)
    start, end = (0, 2, 3), (None, -3, -2)
    found = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode()
        trim = (len(data) + shift) % 3
        found.append(encoded[start[shift]:end[trim]])
    return found


def compile_regex(pattern: str, flags: frozenset[str] = frozenset()) -> Matcher:
    """Every `|re` of every rule is compiled here, with RE2: matching time is linear in the text whatever
    the pattern (`shared.detect.rules.regex`).

    Matching is case-insensitive like the rest of our Sigma; `m` and `s` add multi-line and dot-all.
    """
    return rule_regex(("(?m)" if "m" in flags else "") + pattern, ignore_case=True,
                      dot_all="s" in flags or "d" in flags)


def _value_test(operator: str | None, expected: Any, loc: tuple[str | int, ...],
                options: _Options = _Options()) -> ValueTest:
    """One expected value → a test over the values found at the path (any of them may match)."""
    if expected is None:
        if operator is not None:
            raise RuleError(f"|{operator} needs a value, not null", loc)
        return lambda found: not found or any(value is None for value in found)
    if operator == "cidr":
        try:
            network = ipaddress.ip_network(str(expected), strict=False)
        except ValueError as error:
            raise RuleError(f"not a network: {error}", loc) from None
        return lambda found: any(_in_network(value, network) for value in found)
    if operator == "re":
        try:
            pattern = compile_regex(str(expected), options.regex_flags)
        except RuleError as error:
            raise RuleError(error.message, loc) from None
        return lambda found: any(value is not None and pattern.search(_plain_text(value)) for value in found)
    if operator in ("lt", "lte", "gt", "gte"):
        return _compare(operator, expected, loc)
    shown = _plain_text if options.cased else as_text
    text = shown(expected)
    if operator == "contains":
        return lambda found: any(value is not None and text in shown(value) for value in found)
    if operator == "startswith":
        return lambda found: any(value is not None and shown(value).startswith(text) for value in found)
    if operator == "endswith":
        return lambda found: any(value is not None and shown(value).endswith(text) for value in found)
    if isinstance(expected, str) and ("*" in expected or "?" in expected):
        wildcard = rule_regex(_wildcard_pattern(text), dot_all=True)
        return lambda found: any(value is not None and wildcard.fullmatch(shown(value)) for value in found)
    return lambda found: any(value is not None and shown(value) == text for value in found)


def _plain_text(value: Any) -> str:
    """A value as text without case folding (`|cased`, `|re`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Mapping, list)):
        return _json_text(value)
    return as_text(value)


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "lt": lambda found, limit: found < limit, "lte": lambda found, limit: found <= limit,
    "gt": lambda found, limit: found > limit, "gte": lambda found, limit: found >= limit,
}


def _compare(operator: str, expected: Any, loc: tuple[str | int, ...]) -> ValueTest:
    limit = _number(expected)
    if limit is None:
        raise RuleError(f"|{operator} needs a number", loc)
    holds = _COMPARISONS[operator]

    def compares(found: list[Any]) -> bool:
        for value in found:
            number = _number(value)
            if number is not None and holds(number, limit):
                return True
        return False

    return compares


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _wildcard_pattern(text: str) -> str:
    """Sigma plain-value wildcards: `*` any run, `?` one character, `\\*` a literal star."""
    pattern, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "*?\\":
            pattern.append(re.escape(text[index + 1]))
            index += 2
            continue
        pattern.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        index += 1
    return "".join(pattern)


def _in_network(value: Any, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return ipaddress.ip_address(value) in network
    except ValueError:
        return False


def _all_of(predicates: Sequence[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda event: first(event) and second(event)
    return lambda event: all(predicate(event) for predicate in predicates)


def _any_of(predicates: Sequence[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    return lambda event: any(predicate(event) for predicate in predicates)


_TOKEN = re.compile(r"\s*(?:(\()|(\))|([A-Za-z0-9_*]+))")


T = TypeVar("T")


@dataclass(frozen=True)
class _Algebra(Generic[T]):
    """What a condition combines: predicates to match events, or what they require of a field."""

    all_of: Callable[[Sequence[T]], T]
    any_of: Callable[[Sequence[T]], T]
    negate: Callable[[T], T]


def _negate(inner: Predicate) -> Predicate:
    return lambda event: not inner(event)


_PREDICATES = _Algebra[Predicate](_all_of, _any_of, _negate)


def _parse_condition(condition: Any, selections: Mapping[str, T], loc: tuple[str | int, ...],
                     algebra: _Algebra[T]) -> T:
    """`sel and not (filter_a or filter_b)`, `1 of sel_*`, `all of them`: precedence not > and > or."""
    if not isinstance(condition, str) or not condition.strip():
        raise RuleError("condition must be a non-empty expression", loc)
    tokens: list[str] = []
    position = 0
    text = condition.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise RuleError(f"unexpected {text[position:].strip()[:20]!r} in condition", loc)
        tokens.append(match.group(match.lastindex or 0))
        position = match.end()
    parser = _ConditionParser(tokens, selections, loc, algebra)
    predicate = parser.expression()
    if parser.peek() is not None:
        raise RuleError(f"unexpected {parser.peek()!r} in condition", loc)
    return predicate


class _ConditionParser(Generic[T]):
    def __init__(self, tokens: list[str], selections: Mapping[str, T], loc: tuple[str | int, ...],
                 algebra: _Algebra[T]) -> None:
        self._tokens, self._index = tokens, 0
        self._selections, self._loc, self._algebra = selections, loc, algebra

    def peek(self) -> str | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _next(self, wanted: str) -> str:
        token = self.peek()
        if token is None:
            raise RuleError(f"condition ends where {wanted} was expected", self._loc)
        self._index += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.lower() == word:
            self._index += 1
            return True
        return False

    def expression(self) -> T:
        terms = [self._term()]
        while self._keyword("or"):
            terms.append(self._term())
        return self._algebra.any_of(terms)

    def _term(self) -> T:
        factors = [self._factor()]
        while self._keyword("and"):
            factors.append(self._factor())
        return self._algebra.all_of(factors)

    def _factor(self) -> T:
        if self._keyword("not"):
            return self._algebra.negate(self._factor())
        word = self._next("a selection")
        if word == "(":
            inner = self.expression()
            if self._next("')'") != ")":
                raise RuleError("missing ')' in condition", self._loc)
            return inner
        if word.lower() in ("1", "any", "all") and self._keyword("of"):
            return self._quantified(word.lower(), self._next("a selection pattern after 'of'"))
        if word in (")", "(") or word.lower() in ("and", "or", "of"):
            raise RuleError(f"unexpected {word!r} in condition", self._loc)
        if word not in self._selections:
            raise RuleError(f"condition names {word!r}, which is not a selection of this rule", self._loc)
        return self._selections[word]

    def _quantified(self, quantifier: str, pattern: str) -> T:
        if pattern.lower() == "them":
            chosen = list(self._selections.values())
        else:
            regex = re.compile(_wildcard_pattern(pattern))
            chosen = [predicate for name, predicate in self._selections.items() if regex.fullmatch(name)]
        if not chosen:
            raise RuleError(f"'{quantifier} of {pattern}' matches no selection", self._loc)
        return self._algebra.all_of(chosen) if quantifier == "all" else self._algebra.any_of(chosen)
