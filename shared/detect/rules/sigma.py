"""Sigma detection syntax compiled to plain predicates over normalized events (dicts).

Compiling once at load time keeps the hot path to a few closure calls per event and rule. Semantics
follow Sigma: a selection map ANDs its fields, a list of maps ORs them, a list of values ORs them
(`|all` ANDs them). Differences on purpose: every comparison is case-insensitive (`|re` included),
numbers and booleans compare as their text (`4` matches `"4"`), and a path reaches through arrays (and
JSON text) so that `targets.type: Group` matches when any target is a group.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from shared.detect.rules.errors import RuleError
from shared.detect.rules.regex import rule_regex

Event = Mapping[str, Any]
Predicate = Callable[[Event], bool]
Getter = Callable[[Event], list[Any]]

MODIFIERS = frozenset({"contains", "startswith", "endswith", "all", "re", "cidr"})
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
    return str(value).casefold()


def compile_detection(detection: Mapping[str, Any]) -> Predicate:
    """`detection:` (named selections + `condition`) → one predicate. Raises RuleError with a loc."""
    if not isinstance(detection, Mapping):
        raise RuleError("detection must be a mapping of named selections and a condition")
    selections = {name: body for name, body in detection.items() if name != "condition"}
    if "condition" not in detection:
        raise RuleError("detection has no condition", ("condition",))
    if not selections:
        raise RuleError("detection has no named selection")
    compiled: dict[str, Predicate] = {}
    for name, body in selections.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise RuleError(f"selection name {name!r} must be a word (letters, digits, _)", (str(name),))
        compiled[name] = _compile_selection(body, (name,))
    condition = detection["condition"]
    if isinstance(condition, list):
        parsed = [_parse_condition(item, compiled, ("condition", index)) for index, item in enumerate(condition)]
        return _any_of(parsed)
    return _parse_condition(condition, compiled, ("condition",))


def _compile_selection(body: Any, loc: tuple[str | int, ...]) -> Predicate:
    if isinstance(body, Mapping):
        if not body:
            raise RuleError("a selection needs at least one field", loc)
        return _all_of([_compile_field(str(key), value, (*loc, str(key))) for key, value in body.items()])
    if isinstance(body, list) and body and all(isinstance(item, Mapping) for item in body):
        return _any_of([_compile_selection(item, (*loc, index)) for index, item in enumerate(body)])
    raise RuleError("a selection is a map of fields or a list of such maps (keyword search is not "
                    "supported: name the field)", loc)


def _compile_field(key: str, expected: Any, loc: tuple[str | int, ...]) -> Predicate:
    path, *modifiers = key.split("|")
    unknown = [modifier for modifier in modifiers if modifier not in MODIFIERS]
    if unknown:
        raise RuleError(f"unknown modifier {unknown[0]!r} (supported: {', '.join(sorted(MODIFIERS))})", loc)
    try:
        values_of = compile_path(path)
    except RuleError as error:
        raise RuleError(error.message, loc) from None
    operators = [modifier for modifier in modifiers if modifier != "all"]
    if len(operators) > 1:
        raise RuleError(f"modifiers {'|'.join(operators)} cannot be combined", loc)
    values = expected if isinstance(expected, list) else [expected]
    if not values:
        raise RuleError("an empty list of values matches nothing", loc)
    if any(isinstance(value, (Mapping, list)) for value in values):
        raise RuleError("values must be scalars (text, numbers, booleans or null)", loc)
    tests = [_value_test(operators[0] if operators else None, value, loc) for value in values]
    if len(tests) == 1:  # the common case, without a generator per event
        only = tests[0]
        return lambda event: only(values_of(event))
    combine = all if "all" in modifiers else any

    def field_matches(event: Event) -> bool:
        found = values_of(event)
        return combine(test(found) for test in tests)

    return field_matches


ValueTest = Callable[[list[Any]], bool]


def _value_test(operator: str | None, expected: Any, loc: tuple[str | int, ...]) -> ValueTest:
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
            pattern = rule_regex(str(expected), ignore_case=True)
        except RuleError as error:
            raise RuleError(error.message, loc) from None
        return lambda found: any(value is not None and pattern.search(as_text(value)) for value in found)
    text = as_text(expected)
    if operator == "contains":
        return lambda found: any(value is not None and text in as_text(value) for value in found)
    if operator == "startswith":
        return lambda found: any(value is not None and as_text(value).startswith(text) for value in found)
    if operator == "endswith":
        return lambda found: any(value is not None and as_text(value).endswith(text) for value in found)
    if isinstance(expected, str) and ("*" in expected or "?" in expected):
        wildcard = rule_regex(_wildcard_pattern(text), dot_all=True)
        return lambda found: any(value is not None and wildcard.fullmatch(as_text(value)) for value in found)
    return lambda found: any(value is not None and as_text(value) == text for value in found)


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


def _parse_condition(condition: Any, selections: Mapping[str, Predicate],
                     loc: tuple[str | int, ...]) -> Predicate:
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
    parser = _ConditionParser(tokens, selections, loc)
    predicate = parser.expression()
    if parser.peek() is not None:
        raise RuleError(f"unexpected {parser.peek()!r} in condition", loc)
    return predicate


class _ConditionParser:
    def __init__(self, tokens: list[str], selections: Mapping[str, Predicate],
                 loc: tuple[str | int, ...]) -> None:
        self._tokens, self._index = tokens, 0
        self._selections, self._loc = selections, loc

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

    def expression(self) -> Predicate:
        terms = [self._term()]
        while self._keyword("or"):
            terms.append(self._term())
        return _any_of(terms)

    def _term(self) -> Predicate:
        factors = [self._factor()]
        while self._keyword("and"):
            factors.append(self._factor())
        return _all_of(factors)

    def _factor(self) -> Predicate:
        if self._keyword("not"):
            inner = self._factor()
            return lambda event: not inner(event)
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

    def _quantified(self, quantifier: str, pattern: str) -> Predicate:
        if pattern.lower() == "them":
            chosen = list(self._selections.values())
        else:
            regex = re.compile(_wildcard_pattern(pattern))
            chosen = [predicate for name, predicate in self._selections.items() if regex.fullmatch(name)]
        if not chosen:
            raise RuleError(f"'{quantifier} of {pattern}' matches no selection", self._loc)
        return _all_of(chosen) if quantifier == "all" else _any_of(chosen)
