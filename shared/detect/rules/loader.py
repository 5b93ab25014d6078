"""Load a rules folder: every rule file on its own, so one bad file never disables the others.

Errors name the file, the line and the problem (`rules/x.yaml:12: detection.selection: unknown
modifier 'contain'`). YAML is read with two traps of YAML 1.1 closed: only true/false are booleans
(`country: NO` stays Norway) and times stay text, as they are in normalized events.

A hostile or broken file must not take the other rules down, nor the process: its size, its YAML
nesting and its size with anchors expanded, its conditions' length and nesting and its test events
are bounded before anything recurses over them, and any other exception is that file's error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shared.detect.rules.correlation import compile_correlation, silence_inputs
from shared.detect.rules.errors import LoadError, RuleError
from shared.detect.rules.fields import Service, field_map
from shared.detect.rules.index import requirement_of
from shared.detect.rules.model import DEFAULT_STATUSES, ListFilter, RuleFile, RuleTest, ValueList, parse_duration
from shared.detect.rules.rule import Rule, RuleCase
from shared.detect.rules.sigma import Getter, Predicate, Resolve, as_text, compile_detection, required_values
from shared.detect.subscriptions import CATALOG_LIST, SubscriptionCatalog, filter_lists
from shared.normalized_event import FIELD_NAMES, NormalizedEvent
from shared.values import MappingError, format_time, parse_time

LISTS_FOLDER = "lists"
UNKNOWN_SUBSCRIPTIONS = "production"  # the environment of a subscription the catalog does not list
ROUTES_FILE = "routes.yaml"  # where alerts go (shared.delivery.routes): beside the rules, not a rule
RULE_SUFFIXES = (".yaml", ".yml")
# Test events without a time get one from here, a second apart.
TEST_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# Bounds on one file (the shipped rules are under 3 KB, 8 levels deep, conditions under 100 characters).
MAX_FILE_BYTES = 512 * 1024
MAX_YAML_DEPTH = 50
MAX_YAML_NODES = 100_000  # anchors expanded: what validation and compiling walk
MAX_CONDITION_CHARS = 4_000
MAX_CONDITION_NESTING = 32  # parentheses and `not`s enclosing any point of a condition
MAX_TEST_EVENTS = 50_000  # per rule file, `repeat` included: they are built at load time
_CONDITION_TOKEN = re.compile(r"\(|\)|[A-Za-z0-9_*]+")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


class _RuleYamlLoader(yaml.SafeLoader):
    """SafeLoader without the YAML 1.1 yes/no/on/off booleans and without timestamp conversion, and
    with its nesting bounded (composing recurses once per level)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.MarkedYAMLError(problem=f"nested deeper than {MAX_YAML_DEPTH} levels",
                                       problem_mark=self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_BOOL, _TIMESTAMP = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp"
_RuleYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RuleYamlLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                      list("tTfF"))


@dataclass
class RulePack:
    """The rules that loaded, one error per file that did not, and the rules whose status is not run."""

    rules: list[Rule] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    skipped: list[LoadError] = field(default_factory=list)


@dataclass(frozen=True)
class _Document:
    """One YAML document of a rule file, validated: a rule or a correlation (a file may hold several)."""

    path: Path
    spec: RuleFile
    node: yaml.Node


def load_rules(directory: Path, statuses: Collection[str] = DEFAULT_STATUSES,
               unknown_subscriptions: str = UNKNOWN_SUBSCRIPTIONS) -> RulePack:
    """Every rule file under `directory`; Sigma rules whose `status` is not in `statuses` are skipped.
    A subscription the catalog does not list counts as one of `unknown_subscriptions` (an environment).

    Rules load first, then correlations, which name the rules they count (by `name` or `id`, in any
    file). A rule only a correlation counts raises no alert of its own unless the correlation says
    `generate: true`."""
    pack = RulePack()
    if not directory.is_dir():
        pack.errors.append(LoadError(directory, None, "rules folder not found"))
        return pack
    lists = _load_lists(directory / LISTS_FOLDER, pack.errors, unknown_subscriptions)
    documents: list[_Document] = []
    for path in rule_files(directory):
        try:
            documents.extend(_documents(path))
        except _FileError as error:
            pack.errors.append(error.report)
        except Exception as error:  # whatever else one file causes, the other rules still load
            pack.errors.append(_unexpected(path, error))
    seen: dict[str, Path] = {}
    by_reference: dict[str, Rule] = {}
    for document in _in_dependency_order(documents):
        try:
            rule = _compiled(document, lambda spec, path: _compile(spec, path, lists, by_reference))
        except _FileError as error:
            pack.errors.append(error.report)
            continue
        except Exception as error:
            pack.errors.append(_unexpected(document.path, error))
            continue
        if rule.id in seen:
            pack.errors.append(LoadError(document.path, document.node.start_mark.line + 1,
                                         f"rule id {rule.id!r} is already used by {seen[rule.id]}"))
            continue
        if rule.spec.status is not None and rule.spec.status not in statuses:
            pack.skipped.append(LoadError(document.path, None, f"status {rule.spec.status} is not run (running: "
                                                               f"{', '.join(statuses)})"))
            continue
        seen[rule.id] = document.path
        by_reference.update({rule.spec.id: rule, rule.id: rule})  # Sigma refers by name or by id
        pack.rules.append(rule)
    pack.rules = silence_inputs(pack.rules, [document.spec for document in documents])
    return pack


def _in_dependency_order(documents: list[_Document]) -> list[_Document]:
    """Rules first, then each correlation after the correlations it names (in whatever file); a correlation
    in a cycle, or naming what no document defines, comes last and reports what is missing."""
    ordered = [item for item in documents if item.spec.correlation is None]
    pending = [item for item in documents if item.spec.correlation is not None]
    names = {name: item for item in pending for name in (item.spec.id, item.spec.rule_id)}
    placed: set[int] = set()
    while pending:
        ready = [item for item in pending if all(names.get(name) is None or id(names[name]) in placed
                                                 for name in (item.spec.correlation.rules if item.spec.correlation
                                                              else []))]
        if not ready:
            return ordered + pending
        for item in ready:
            placed.add(id(item))
        ordered.extend(ready)
        pending = [item for item in pending if id(item) not in placed]
    return ordered


def rule_files(directory: Path) -> list[Path]:
    lists = directory / LISTS_FOLDER
    routes = directory / ROUTES_FILE
    return sorted(path for path in directory.rglob("*") if path.suffix in RULE_SUFFIXES
                  and path.is_file() and lists not in path.parents and path != routes)


def read_documents(path: Path) -> tuple[list[Any], LoadError | None]:
    """A rule file's YAML documents, read with the same bounds as loading (`rules convert` reads old files)."""
    try:
        return [data for data, _ in _read_yaml_documents(path)], None
    except _FileError as error:
        return [], error.report


class _FileError(Exception):
    def __init__(self, report: LoadError) -> None:
        super().__init__(str(report))
        self.report = report


def _unexpected(path: Path, error: Exception) -> LoadError:
    return LoadError(path, None, f"cannot load: {type(error).__name__}: {error}"[:500])


def _read_yaml(path: Path) -> tuple[Any, yaml.Node]:
    """A file of one YAML document (a list)."""
    documents = _read_yaml_documents(path)
    if len(documents) > 1:
        raise _FileError(LoadError(path, documents[1][1].start_mark.line + 1, "holds more than one YAML document"))
    return documents[0]


def _read_yaml_documents(path: Path) -> list[tuple[Any, yaml.Node]]:
    """Every document of the file (`---` separates a rule from its correlation); each one bounded."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise _FileError(LoadError(path, None, f"larger than {MAX_FILE_BYTES // 1024} KiB"))
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _FileError(LoadError(path, None, f"cannot read: {error}")) from None
    loader = _RuleYamlLoader(text)
    try:
        documents: list[tuple[Any, yaml.Node]] = []
        budget = MAX_YAML_NODES
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            budget -= _expanded_size(node, {})
            if budget < 0:
                raise _FileError(LoadError(path, None, f"more than {MAX_YAML_NODES:,} values with anchors expanded"))
            documents.append((loader.construct_document(node), node))
        if not documents:
            raise _FileError(LoadError(path, 1, "the file is empty"))
        return documents
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        raise _FileError(LoadError(path, line, f"not valid YAML: {error.problem or error}")) from None
    except yaml.YAMLError as error:
        raise _FileError(LoadError(path, None, f"not valid YAML: {error}")) from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, known: dict[int, int]) -> int:
    """How many values the document holds once every alias is replaced by what it names."""
    size = known.get(id(node))
    if size is None:
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        else:
            children = []
        size = known[id(node)] = 1 + sum(min(_expanded_size(child, known), MAX_YAML_NODES) for child in children)
    return size


def line_of(node: yaml.Node, loc: Sequence[str | int]) -> int:
    """The line of the deepest key or item of `loc` that exists in the document."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    node, line = value_node, key_node.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _describe(loc: Sequence[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _validation_report(path: Path, node: yaml.Node, error: ValidationError,
                       prefix: Sequence[str | int] = ()) -> LoadError:
    """The first problem with its line; `prefix` locates a model validated from inside the document."""
    first = error.errors()[0]
    loc = [*prefix, *(part for part in first["loc"] if isinstance(part, (str, int)))]
    where = _describe(loc)
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return LoadError(path, line_of(node, loc), f"{where}: {message}{more}" if where else message + more)


def _load_lists(folder: Path, errors: list[LoadError], unknown_subscriptions: str) -> dict[str, Container[str]]:
    lists: dict[str, Container[str]] = {}
    if not folder.is_dir():
        return lists
    for path in sorted(folder.glob("*")):
        if path.suffix not in RULE_SUFFIXES:
            continue
        try:
            data, node = _read_yaml(path)
            try:
                if path.stem == CATALOG_LIST:  # one list per environment (shared/detect/subscriptions.py)
                    lists.update(filter_lists(SubscriptionCatalog.model_validate(data), unknown_subscriptions))
                    continue
                value_list = ValueList.model_validate(data)
            except ValidationError as error:
                raise _FileError(_validation_report(path, node, error)) from None
        except _FileError as error:
            errors.append(error.report)
            continue
        except Exception as error:  # one bad list is that list's error; rules naming it say so
            errors.append(_unexpected(path, error))
            continue
        lists[path.stem] = frozenset(as_text(value) for value in value_list.values)
    return lists


def _documents(path: Path) -> list[_Document]:
    """The file's documents, each validated (a file is loaded whole or reported whole)."""
    documents = []
    for data, node in _read_yaml_documents(path):
        try:
            documents.append(_Document(path, RuleFile.model_validate(data), node))
        except ValidationError as error:
            raise _FileError(_validation_report(path, node, error)) from None
    return documents


def _compiled(document: _Document, compile_spec: Callable[[RuleFile, Path], Rule]) -> Rule:
    try:
        return compile_spec(document.spec, document.path)
    except RuleError as error:
        where = _describe(error.loc)
        raise _FileError(LoadError(document.path, line_of(document.node, error.loc),
                                   f"{where}: {error.message}" if where else error.message)) from None


def _compile(spec: RuleFile, path: Path, lists: Mapping[str, Container[str]],
             loaded: Mapping[str, Rule]) -> Rule:
    if spec.correlation is not None:
        return _with_cases(compile_correlation(spec, path, loaded))
    return _with_cases(_compile_detection(spec, path, lists))


def _with_cases(rule: Rule) -> Rule:
    spec = rule.spec
    _check_summary(spec.summary)
    planned = sum(item["repeat"] if isinstance(item.get("repeat"), int) else 1
                  for test in spec.tests for item in test.events)
    if planned > MAX_TEST_EVENTS:
        raise RuleError(f"the tests hold {planned:,} events, more than {MAX_TEST_EVENTS:,}", ("tests",))
    return replace(rule, cases=tuple(_case(spec.rule_id, test, ("tests", index))
                                     for index, test in enumerate(spec.tests)))


def _compile_detection(spec: RuleFile, path: Path, lists: Mapping[str, Container[str]]) -> Rule:
    if spec.first_seen is not None and spec.suppress is not None:
        raise RuleError("a first_seen rule raises once per new value: suppress does not apply", ("suppress",))
    _check_condition(spec.detection.get("condition") if isinstance(spec.detection, Mapping) else None)
    service = field_map().service(spec.logsource.model_dump() if spec.logsource else None)

    def resolve(name: str) -> Getter:
        return field_map().getter(name, service)

    try:
        detection = compile_detection(spec.detection or {}, resolve)
    except RuleError as error:
        raise error.within("detection") from None
    filters = [_compile_filter(item, lists, ("filters", index), resolve) for index, item in enumerate(spec.filters)]
    selects = detection if not filters else _both(detection, filters)
    value_getters: tuple[Getter, ...] = ()
    requirements = requirement_of((field_map().paths(name, service), required_values(spec.detection or {}, name))
                                 for name in _plain_fields(spec.detection or {}))
    if spec.first_seen is not None:
        value_getters = tuple(_path(resolve, name, ("first_seen", "fields", index))
                              for index, name in enumerate(spec.first_seen.fields))
    return Rule(
        spec=spec, path=path, selects=_routed(service, selects),
        group_getters=tuple(_path(resolve, name, ("group-by", index)) for index, name in enumerate(spec.group_by)),
        value_getters=value_getters, service=None if service is None else service.name, requirements=requirements,
    )


def _plain_fields(detection: Mapping[str, Any]) -> set[str]:
    """Field names a selection compares without a modifier: the candidates of the rule index."""
    names: set[str] = set()
    for name, body in detection.items():
        if name in ("condition", "timeframe"):
            continue
        for selection in body if isinstance(body, list) else [body]:
            if isinstance(selection, Mapping):
                names.update(key for key in selection if isinstance(key, str) and "|" not in key)
    return names


def _routed(service: Service | None, selects: Predicate) -> Predicate:
    """A rule of a log source sees only that log's events (the engine also routes by `Rule.service`)."""
    if service is None:
        return selects
    routes = service.routes
    return lambda event: routes(event) and selects(event)


def _check_condition(condition: Any) -> None:
    """Bound a condition before it is parsed (recursively) and compiled into nested predicates."""
    items = enumerate(condition) if isinstance(condition, list) else [(None, condition)]
    for index, text in items:
        loc: tuple[str | int, ...] = ("detection", "condition") + (() if index is None else (index,))
        if not isinstance(text, str):
            continue  # compile_detection says what a condition must be
        if len(text) > MAX_CONDITION_CHARS:
            raise RuleError(f"condition longer than {MAX_CONDITION_CHARS:,} characters", loc)
        depth = nots = 0
        for word in _CONDITION_TOKEN.findall(text):
            depth += (word == "(") - (word == ")")
            nots = nots + 1 if word.lower() == "not" else 0
            if depth + nots > MAX_CONDITION_NESTING:
                raise RuleError(f"condition nested deeper than {MAX_CONDITION_NESTING} parentheses and 'not's", loc)


def _path(resolve: Resolve, name: str, loc: tuple[str | int, ...]) -> Getter:
    try:
        return resolve(name)
    except RuleError as error:
        raise RuleError(error.message, loc) from None


def _compile_filter(item: ListFilter, lists: Mapping[str, Container[str]],
                    loc: tuple[str | int, ...], resolve: Resolve) -> Predicate:
    name = item.in_list or item.not_in or ""
    if name not in lists:
        raise RuleError(f"list {name!r} is not defined (expected {LISTS_FOLDER}/{name}.yaml)", loc)
    members, values_of = lists[name], _path(resolve, item.field, (*loc, "field"))
    if item.in_list is not None:
        return lambda event: any(as_text(value) in members for value in values_of(event) if value is not None)
    return lambda event: not any(as_text(value) in members for value in values_of(event) if value is not None)


def _both(detection: Predicate, filters: list[Predicate]) -> Predicate:
    return lambda event: detection(event) and all(keep(event) for keep in filters)


def _check_summary(template: str | None) -> None:
    if template is None:
        return
    if template.count("{") != template.count("}"):
        raise RuleError("unbalanced braces in summary", ("summary",))
    for placeholder in _PLACEHOLDER.findall(template):
        if not all(_PLACEHOLDER_NAME.fullmatch(name) for name in placeholder.split("|")):
            raise RuleError(f"summary placeholder {{{placeholder}}} is not a field name, dotted path or "
                            "alternatives a|b", ("summary",))


def _case(rule_id: str, test: RuleTest, loc: tuple[str | int, ...]) -> RuleCase:
    events: list[dict[str, Any]] = []
    for index, item in enumerate(test.events):
        item_loc = (*loc, "events", index)
        if "repeat" in item:
            events.extend(_repeated(rule_id, item, len(events), item_loc))
        else:
            events.append(_test_event(rule_id, item, len(events), item_loc))
    return RuleCase(name=test.name, alerts=test.alerts, events=tuple(events))


def _repeated(rule_id: str, item: Mapping[str, Any], first: int,
              loc: tuple[str | int, ...]) -> list[dict[str, Any]]:
    """`{repeat: 12, every: 20s, event: {...}}`: 12 events 20 s apart, `{n}` in text → 0, 1, 2..."""
    unknown = set(item) - {"repeat", "every", "event"}
    if unknown:
        raise RuleError(f"unknown key {sorted(unknown)[0]!r} (repeat, every, event)", loc)
    count, template = item.get("repeat"), item.get("event")
    if not isinstance(count, int) or not 1 <= count <= 10_000:
        raise RuleError("repeat must be a whole number from 1 to 10000", (*loc, "repeat"))
    if not isinstance(template, dict):
        raise RuleError("repeat needs an event: a map of normalized fields", (*loc, "event"))
    try:
        every = parse_duration(item.get("every", "1s"))
    except ValueError as error:
        raise RuleError(str(error), (*loc, "every")) from None
    start = _time_of(template, first, (*loc, "event", "time"))
    events = []
    for number in range(count):
        fragment = _substitute(template, number)
        fragment["time"] = format_time(start + number * every)
        events.append(_test_event(rule_id, fragment, first + number, (*loc, "event")))
    return events


def _substitute(value: Any, number: int) -> Any:
    if isinstance(value, str):
        return value.replace("{n}", str(number))
    if isinstance(value, dict):
        return {key: _substitute(item, number) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, number) for item in value]
    return value


def _time_of(fragment: Mapping[str, Any], index: int, loc: tuple[str | int, ...]) -> datetime:
    if "time" not in fragment:
        return TEST_EPOCH + timedelta(seconds=index)
    try:
        return parse_time(fragment["time"])
    except MappingError as error:
        raise RuleError(str(error), loc) from None


def _test_event(rule_id: str, fragment: Mapping[str, Any], index: int,
                loc: tuple[str | int, ...]) -> dict[str, Any]:
    """A test event: the fragment over a null event, validated against the normalized contract."""
    event: dict[str, Any] = dict.fromkeys(FIELD_NAMES)
    event.update(event_id=f"{rule_id}-test-{index}", source="activity", common_event="Other", action="other")
    event.update(fragment)
    event["time"] = format_time(_time_of(fragment, index, (*loc, "time")))
    try:
        NormalizedEvent.model_validate(event)
    except ValidationError as error:
        first = error.errors()[0]
        field_loc = [part for part in first["loc"] if isinstance(part, (str, int))]
        message = "not a field of the normalized event" if first["type"] == "extra_forbidden" else first["msg"]
        raise RuleError(message, (*loc, *field_loc)) from None
    return event


# For other YAML files kept beside the rules (routes.yaml): the same bounded reading and error reports.
FileError = _FileError
read_yaml = _read_yaml
validation_report = _validation_report
