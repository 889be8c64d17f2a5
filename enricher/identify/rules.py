"""Identity rules: which span and resource attributes name an agent.

A rule set is YAML (the built-in one is ``builtin_rules.yaml`` beside this file; users add
or override rules with ``AGENTMON_RULES_FILE``). Rules are tried in order; the first
that matches a span gives its identity. A *source* names where a value comes from:

    span:KEY              a span attribute        resource:KEY   a resource attribute
    span:KEY[field]       a field of a JSON or Python-repr dict held in that attribute
    span.name  scope.name the span's or the instrumentation scope's name
    $group                a named group captured by a ``regex`` condition of the rule
    =text                 a literal; ``{source}`` inside it is replaced, e.g. =vanna-{span:vanna.connection_id}

A rule: ``id``; ``when``: {source: test} (all must hold; a test is a string (equals), a
list (one of), or {exists: true|false}, {equals: x}, {in: [..]}, {regex: '...'},
{prefix: '...'}); ``identity``: {name, type, project_id, external_id, agent_id}, each a
source or a list of sources (the first non-empty wins). ``agent_id`` is an explicit
registry id. A rule whose sources are all resource attributes is evaluated once per resource.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from enricher.identify.structured import field_text
from registry_api.store.identity import AGENT_TYPES, CONTROL_CHARACTERS, DEFAULT_PROJECT, AgentIdentity

_SOURCE = re.compile(r"^(span|resource):([^\[\]]+)(?:\[([^\[\]]+)\])?$")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
MAX_VALUE = 255


class RuleError(ValueError):
    """A rule file that cannot be used; the message says where and why."""


def any_value_text(value: Any) -> str | None:
    """An OTLP AnyValue as text, for matching (scalars only)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return repr(value.double_value)
    return None


@dataclass(slots=True)
class SpanView:
    """What rules may look at: attribute dicts map keys to OTLP AnyValue messages."""

    span_attrs: Mapping[str, Any]
    resource_attrs: Mapping[str, Any]
    span_name: str = ""
    scope_name: str = ""


@dataclass(frozen=True, slots=True)
class Identification:
    """A rule's answer: an identity to resolve, and/or an explicit registry id."""

    rule_id: str
    identity: AgentIdentity | None
    agent_id: str | None = None


# ---- sources ---------------------------------------------------------------------


class Source:
    resource_only: bool = False
    span_key: str | None = None

    def get(self, view: SpanView, groups: Mapping[str, str]) -> str | None:
        raise NotImplementedError


@dataclass(slots=True)
class AttributeSource(Source):
    on_span: bool
    key: str
    dict_field: str | None

    @property
    def resource_only(self) -> bool:  # type: ignore[override]
        return not self.on_span

    @property
    def span_key(self) -> str | None:  # type: ignore[override]
        return self.key if self.on_span else None

    def get(self, view: SpanView, groups: Mapping[str, str]) -> str | None:
        value = (view.span_attrs if self.on_span else view.resource_attrs).get(self.key)
        if value is None:
            return None
        text = any_value_text(value)
        if text is None:
            return None
        if self.dict_field is not None:
            return field_text(text, self.dict_field)
        return text


@dataclass(slots=True)
class NameSource(Source):
    of_scope: bool

    def get(self, view: SpanView, groups: Mapping[str, str]) -> str | None:
        return view.scope_name if self.of_scope else view.span_name


@dataclass(slots=True)
class GroupSource(Source):
    group: str

    def get(self, view: SpanView, groups: Mapping[str, str]) -> str | None:
        return groups.get(self.group)


@dataclass(slots=True)
class LiteralSource(Source):
    text: str
    parts: list[Source]

    @property
    def resource_only(self) -> bool:  # type: ignore[override]
        return all(part.resource_only for part in self.parts)

    def get(self, view: SpanView, groups: Mapping[str, str]) -> str | None:
        if not self.parts:
            return self.text
        values = iter([part.get(view, groups) for part in self.parts])
        missing = False

        def fill(_match: re.Match[str]) -> str:
            nonlocal missing
            value = next(values)
            if not value:
                missing = True
                return ""
            return value

        result = _PLACEHOLDER.sub(fill, self.text)
        return None if missing else result


def parse_source(text: str, where: str) -> Source:
    if not isinstance(text, str) or not text:
        raise RuleError(f"{where}: a source must be a non-empty string, got {text!r}")
    if text.startswith("="):
        literal = text[1:]
        parts = [parse_source(inner, where) for inner in _PLACEHOLDER.findall(literal)]
        return LiteralSource(literal, parts)
    if text in ("span.name", "scope.name"):
        return NameSource(of_scope=text == "scope.name")
    if text.startswith("$") and len(text) > 1:
        return GroupSource(text[1:])
    match = _SOURCE.match(text)
    if match is None:
        raise RuleError(
            f"{where}: cannot read source {text!r} (use span:KEY, resource:KEY, span:KEY[field], "
            "span.name, scope.name, $group or =literal)"
        )
    return AttributeSource(on_span=match.group(1) == "span", key=match.group(2), dict_field=match.group(3))


def _sources(value: Any, where: str) -> list[Source]:
    if value is None:
        return []
    if isinstance(value, str):
        return [parse_source(value, where)]
    if isinstance(value, list):
        return [parse_source(item, where) for item in value]
    raise RuleError(f"{where}: expected a source or a list of sources, got {value!r}")


def first_value(sources: Sequence[Source], view: SpanView, groups: Mapping[str, str]) -> str | None:
    return first_value_and_source(sources, view, groups)[0]


def first_value_and_source(
    sources: Sequence[Source], view: SpanView, groups: Mapping[str, str]
) -> tuple[str | None, Source | None]:
    for source in sources:
        value = source.get(view, groups)
        if value:
            value = value.translate(CONTROL_CHARACTERS).strip()  # as AgentIdentity would: never empty after
            if value:
                return value[:MAX_VALUE], source
    return None, None


# ---- conditions ------------------------------------------------------------------


@dataclass(slots=True)
class Condition:
    source: Source
    exists: bool | None = None
    one_of: frozenset[str] | None = None
    pattern: re.Pattern[str] | None = None
    prefix: str | None = None

    def test(self, view: SpanView, groups: dict[str, str]) -> bool:
        value = self.source.get(view, groups)
        if self.exists is not None:
            return bool(value) == self.exists
        if value is None:
            return False
        if self.one_of is not None:
            return value in self.one_of
        if self.prefix is not None:
            return value.startswith(self.prefix)
        if self.pattern is not None:
            match = self.pattern.search(value)
            if match is None:
                return False
            groups.update({k: v for k, v in match.groupdict().items() if v})
            return True
        return True


def _condition(source_text: str, test: Any, where: str) -> Condition:
    source = parse_source(source_text, where)
    if isinstance(test, bool):
        return Condition(source, exists=test)
    if isinstance(test, (str, int, float)):
        return Condition(source, one_of=frozenset([str(test)]))
    if isinstance(test, list):
        return Condition(source, one_of=frozenset(str(item) for item in test))
    if isinstance(test, dict) and len(test) == 1:
        (kind, argument), = test.items()
        if kind == "exists":
            return Condition(source, exists=bool(argument))
        if kind == "equals":
            return Condition(source, one_of=frozenset([str(argument)]))
        if kind == "in" and isinstance(argument, list):
            return Condition(source, one_of=frozenset(str(item) for item in argument))
        if kind == "prefix":
            return Condition(source, prefix=str(argument))
        if kind == "regex":
            try:
                return Condition(source, pattern=re.compile(str(argument)))
            except re.error as error:
                raise RuleError(f"{where}: bad regex {argument!r}: {error}") from error
    raise RuleError(f"{where}: unknown test {test!r} (use a value, a list, exists, equals, in, prefix or regex)")


# ---- rules -----------------------------------------------------------------------


@dataclass(slots=True)
class Rule:
    id: str
    conditions: list[Condition]
    name: list[Source]
    type: list[Source]
    project_id: list[Source]
    external_id: list[Source]
    agent_id: list[Source]
    # Span attribute keys that must be present for the rule to have a chance: lets the
    # hot path skip most rules with one set operation.
    required_span_keys: frozenset[str] = field(default_factory=frozenset)
    resource_only: bool = False
    # The answers already given, by their values: agent spans repeat a few identities, and
    # building (and validating) an AgentIdentity costs more than finding its values.
    _answers: dict[tuple, Identification] = field(default_factory=dict, repr=False, compare=False)

    def apply(self, view: SpanView, default_project: Sequence[Source]) -> Identification | None:
        groups: dict[str, str] = {}
        for condition in self.conditions:
            if not condition.test(view, groups):
                return None
        agent_id = first_value(self.agent_id, view, groups)
        name, name_source = first_value_and_source(self.name, view, groups)
        if name is None:
            return Identification(self.id, None, agent_id) if agent_id else None
        agent_type = first_value(self.type, view, groups) or "custom"
        if agent_type not in AGENT_TYPES:
            agent_type = "custom"
        project = first_value(self.project_id, view, groups) or first_value(default_project, view, groups)
        external_id = first_value(self.external_id, view, groups)
        placeholder = isinstance(name_source, LiteralSource)
        key = (name, agent_type, project, external_id, placeholder, agent_id)
        found = self._answers.get(key)
        if found is None:
            identity = AgentIdentity(
                name=name,
                type=agent_type,
                project_id=project or DEFAULT_PROJECT,
                external_id=external_id,
                name_is_placeholder=placeholder,
            )
            found = Identification(self.id, identity, agent_id)
            if len(self._answers) >= 10_000:  # names come from spans: keep the memory bounded
                self._answers.clear()
            self._answers[key] = found
        return found


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise RuleError(f"{where}: a rule is a mapping with an 'id'")
    where = f"{where} (rule {raw['id']!r})"
    unknown = set(raw) - {"id", "when", "identity", "description"}
    if unknown:
        raise RuleError(f"{where}: unknown keys {sorted(unknown)}")
    when = raw.get("when") or {}
    identity = raw.get("identity") or {}
    if not isinstance(when, dict) or not isinstance(identity, dict):
        raise RuleError(f"{where}: 'when' and 'identity' are mappings")
    unknown = set(identity) - {"name", "type", "project_id", "external_id", "agent_id"}
    if unknown:
        raise RuleError(f"{where}: unknown identity fields {sorted(unknown)}")
    if "name" not in identity and "agent_id" not in identity:
        raise RuleError(f"{where}: identity needs a name or an agent_id")
    conditions = [_condition(source, test, where) for source, test in when.items()]
    rule = Rule(
        id=raw["id"],
        conditions=conditions,
        name=_sources(identity.get("name"), where),
        type=_sources(identity.get("type"), where),
        project_id=_sources(identity.get("project_id"), where),
        external_id=_sources(identity.get("external_id"), where),
        agent_id=_sources(identity.get("agent_id"), where),
    )
    rule.required_span_keys = frozenset(
        c.source.key
        for c in conditions
        if isinstance(c.source, AttributeSource) and c.source.on_span and c.exists is not False
    )
    every_source = (
        [c.source for c in conditions] + rule.name + rule.type + rule.project_id + rule.external_id + rule.agent_id
    )
    rule.resource_only = bool(conditions) and all(source.resource_only for source in every_source)
    return rule


def _scope_level(source: Source) -> bool:
    """Whether a source gives one value for every span of a ScopeSpans (its resource or scope)."""
    return source.resource_only or (isinstance(source, NameSource) and source.of_scope)


@dataclass(frozen=True, slots=True)
class ScopeFilter:
    """What the span rules can match in the spans of one resource and scope.

    ``keys``: span attribute keys of which a span must carry at least one for
    ``identify_span`` to return anything but its resource's match, or for
    ``parent_trace_id`` to return anything; None when there are no such keys (a rule could
    match a span on its name alone, say). The pipeline reads the attributes only of the spans
    that carry one: few spans, found at C speed. ``rules``: the span rules that the resource
    and scope do not rule out (a rule on ``scope.name: langflow`` is out for other scopes)."""

    keys: frozenset[str] | None
    rules: list[tuple[int, Rule]]
    answers: dict[tuple, Any] = field(default_factory=dict, compare=False)  # identify_span's, remembered


_UNKNOWN = object()
# Remembered answers and scope filters are keyed by text that comes from spans: only short keys
# are remembered, so that a client sending huge names or values cannot make the caches big.
MAX_REMEMBERED_TEXT = 1024
_RESOURCE_MATCH = object()  # identify_span's answer was its resource's match


def _text_size(key: tuple) -> int:
    """The length of the text in a cache key of strings, Nones, numbers and such tuples."""
    size = 0
    for part in key:
        if isinstance(part, str):
            size += len(part)
        elif isinstance(part, tuple):
            size += _text_size(part)
    return size


def _text(value: Any) -> str | None:
    return any_value_text(value) if value is not None else None


def _read_by(rules: list[Rule], default_project: list[Source]) -> tuple[frozenset[str], tuple[str, ...], bool]:
    """(span attribute keys, resource attribute keys, whether the span's name) that any source
    of these rules or of the default project reads."""
    span_keys: set[str] = set()
    resource_keys: set[str] = set()
    reads_span_name = False
    pending: list[Source] = list(default_project)
    for rule in rules:
        pending += [c.source for c in rule.conditions]
        pending += rule.name + rule.type + rule.project_id + rule.external_id + rule.agent_id
    while pending:
        source = pending.pop()
        if isinstance(source, AttributeSource):
            (span_keys if source.on_span else resource_keys).add(source.key)
        elif isinstance(source, NameSource):
            reads_span_name = reads_span_name or not source.of_scope
        elif isinstance(source, LiteralSource):
            pending += source.parts
        elif not isinstance(source, GroupSource):  # groups come from conditions, read above
            raise TypeError(f"unknown source {source!r}")
    return frozenset(span_keys), tuple(sorted(resource_keys)), reads_span_name


def _prefilter(
    span_rules: list[tuple[int, Rule]], parent_trace_keys: frozenset[str] | None
) -> tuple[frozenset[str], list[tuple[int, list[Condition], str | None]]] | None:
    """What ``RuleSet.scope_filter`` needs: (keys always needed, [(rule index, scope-level
    conditions, key)] for the rules that a resource or scope can rule out), or None if keys
    cannot decide.

    A rule can only match a span that carries every key of its ``required_span_keys``, so one
    of them per rule is enough to look for. One is chosen per rule, greedily, so that rules
    share keys and a common key (``gen_ai.operation.name``) is not picked when a rarer one
    that the same rules need (``gen_ai.agent.name``) covers them.
    """
    if parent_trace_keys is None:
        return None
    markers: dict[int, str] = {}
    uncovered = {index: rule.required_span_keys for index, rule in span_rules if rule.required_span_keys}
    while uncovered:
        counts: dict[str, int] = {}
        for required in uncovered.values():
            for key in required:
                counts[key] = counts.get(key, 0) + 1
        key = min(counts, key=lambda k: (-counts[k], k))
        for index in [index for index, required in uncovered.items() if key in required]:
            markers[index] = key
            del uncovered[index]
    keys = set(parent_trace_keys)
    gated: list[tuple[int, list[Condition], str | None]] = []
    for index, rule in span_rules:
        scope_conditions = [c for c in rule.conditions if _scope_level(c.source)]
        marker = markers.get(index)
        if scope_conditions:
            gated.append((index, scope_conditions, marker))
        elif marker is None:
            return None  # this rule may match any span: every span needs the full treatment
        else:
            keys.add(marker)
    return frozenset(keys), gated


class RuleSet:
    """The ordered rules plus the sources of cross-trace links and resource groups."""

    def __init__(
        self,
        rules: list[Rule],
        *,
        default_project: list[Source],
        parent_trace_id: list[Source],
        group_by: list[Source],
    ) -> None:
        self.rules = rules
        self.default_project = default_project
        self.parent_trace_id_sources = parent_trace_id
        self.group_by = group_by
        self._span_rules = [(index, rule) for index, rule in enumerate(rules) if not rule.resource_only]
        self._resource_rules = [(index, rule) for index, rule in enumerate(rules) if rule.resource_only]
        self._required_keys = frozenset().union(*(rule.required_span_keys for _, rule in self._span_rules))
        # A shortcut for the hot path, valid only when every source is a span attribute.
        only_span_attributes = all(isinstance(s, AttributeSource) and s.on_span for s in parent_trace_id)
        self.parent_trace_keys = (
            frozenset(s.key for s in parent_trace_id) if only_span_attributes else frozenset()
        )
        self._prefilter = _prefilter(self._span_rules, self.parent_trace_keys if only_span_attributes else None)
        self._parent_trace_on_span = only_span_attributes
        # What identify_span's answer can depend on, besides the scope's name and resource.
        self._read_span_keys, self._read_resource_keys, self._reads_span_name = _read_by(
            [rule for _, rule in self._span_rules], default_project
        )
        self._scope_filters: dict[tuple, ScopeFilter] = {}

    @property
    def outcome_keys(self) -> frozenset[str] | None:
        """The span attribute keys that, with the span's ScopeFilter, its resource's match and
        its name, decide everything ``identify_span`` and ``parent_trace_id`` say of it; None
        when a parent_trace_id source reads something else (then no such set exists)."""
        if not self._parent_trace_on_span:
            return None
        return self._read_span_keys | self.parent_trace_keys

    @property
    def scan_keys(self) -> frozenset[str]:
        """Every span attribute key that some ScopeFilter's ``keys`` may hold: what a request
        scanner looks for in every span, so that no scope's filter asks for a key it lacks."""
        if self._prefilter is None:
            return frozenset()  # every scope filter's keys are None: every span is read
        keys, gated = self._prefilter
        return keys | {marker for _, _, marker in gated if marker is not None}

    def scope_filter(self, resource_attrs: Mapping[str, Any], scope_name: str) -> ScopeFilter:
        """What the span rules can match in the spans of one resource and scope (see ScopeFilter).
        The same for every scope with this name and these values of the resource attributes
        that span rules read, so it is kept: its ``answers`` then serve later requests too."""
        context = (scope_name, tuple(_text(resource_attrs.get(key)) for key in self._read_resource_keys))
        found = self._scope_filters.get(context)
        if found is None:
            found = self._new_scope_filter(resource_attrs, scope_name)
            if _text_size(context) <= MAX_REMEMBERED_TEXT:
                if len(self._scope_filters) >= 1024:
                    self._scope_filters.clear()
                self._scope_filters[context] = found
        return found

    def _new_scope_filter(self, resource_attrs: Mapping[str, Any], scope_name: str) -> ScopeFilter:
        if self._prefilter is None:
            return ScopeFilter(None, self._span_rules)
        keys, gated = self._prefilter
        if not gated:
            return ScopeFilter(keys, self._span_rules)
        view = SpanView({}, resource_attrs, "", scope_name)
        ruled_out = set()
        for index, scope_conditions, marker in gated:
            try:
                possible = all(condition.test(view, {}) for condition in scope_conditions)
            except Exception:  # hostile resource values: assume the rule may match
                possible = True
            if not possible:
                ruled_out.add(index)
            elif marker is None:
                keys = None
            elif keys is not None:
                keys = keys | {marker}
        rules = [(index, rule) for index, rule in self._span_rules if index not in ruled_out]
        return ScopeFilter(keys, rules)

    # Resource rules are evaluated once per ResourceSpans, span rules per span.
    def identify_resource(self, resource_attrs: Mapping[str, Any]) -> tuple[int, Identification] | None:
        view = SpanView({}, resource_attrs)
        for index, rule in self._resource_rules:
            found = rule.apply(view, self.default_project)
            if found is not None:
                return index, found
        return None

    def identify_span(
        self,
        view: SpanView,
        resource_match: tuple[int, Identification] | None = None,
        scope: ScopeFilter | None = None,
    ) -> Identification | None:
        """The identity of the first rule that matches the span (or its resource's). With
        ``scope`` (the span's ScopeFilter), the rules that its resource and scope rule out are
        not tried, and the answer is remembered: it is a function of the few attribute values
        that the rules read, which agent spans repeat run after run."""
        attrs = view.span_attrs
        answer_key = None
        if scope is not None:
            answer_key = (
                resource_match[0] if resource_match is not None else -1,
                view.span_name if self._reads_span_name else None,
                # The rules see an attribute only through its text (any_value_text).
                tuple((key, _text(attrs[key])) for key in sorted(self._read_span_keys.intersection(attrs))),
            )
            found = scope.answers.get(answer_key, _UNKNOWN)
            if found is not _UNKNOWN:
                if found is _RESOURCE_MATCH:
                    return resource_match[1] if resource_match is not None else None
                return found
        stop = resource_match[0] if resource_match is not None else len(self.rules)
        # The required keys the span has, found in one pass over its keys (C-level for a
        # dict or a upb map); each rule's test is then a frozenset comparison.
        present = self._required_keys.intersection(attrs)
        found = _RESOURCE_MATCH
        for index, rule in self._span_rules if scope is None else scope.rules:
            if index > stop:
                break
            if rule.required_span_keys and not rule.required_span_keys <= present:
                continue
            identification = rule.apply(view, self.default_project)
            if identification is not None:
                found = identification
                break
        if scope is not None and _text_size(answer_key) <= MAX_REMEMBERED_TEXT:
            if len(scope.answers) >= 10_000:  # values come from spans: keep the memory bounded
                scope.answers.clear()
            scope.answers[answer_key] = found
        if found is _RESOURCE_MATCH:
            return resource_match[1] if resource_match is not None else None
        return found

    def parent_trace_id(self, view: SpanView) -> str | None:
        attrs = view.span_attrs
        if self.parent_trace_keys and not any(key in attrs for key in self.parent_trace_keys):
            return None
        value = first_value(self.parent_trace_id_sources, view, {})
        if value is None:
            return None
        value = value.lower().removeprefix("0x")
        if len(value) != 32 or not all(c in "0123456789abcdef" for c in value) or value == "0" * 32:
            return None
        return value

    def group_key(self, resource_attrs: Mapping[str, Any]) -> str | None:
        view = SpanView({}, resource_attrs)
        value = first_value(self.group_by, view, {})
        if value is None:
            return None
        service = resource_attrs.get("service.name")
        return f"{any_value_text(service) if service is not None else ''}\x1f{value}"


# ---- loading ---------------------------------------------------------------------


def _load_document(text: str, where: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise RuleError(f"{where}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise RuleError(f"{where}: the top level must be a mapping")
    unknown = set(document) - {"rules", "disable", "default_project_id", "parent_trace_id", "group_by"}
    if unknown:
        raise RuleError(f"{where}: unknown keys {sorted(unknown)}")
    return document


def builtin_document() -> dict[str, Any]:
    text = resources.files("enricher.identify").joinpath("builtin_rules.yaml").read_text()
    return _load_document(text, "builtin_rules.yaml")


def load_rules(user_file: Path | None = None) -> RuleSet:
    """The built-in rules, with a user's file applied on top.

    User rules come first (they take precedence); a user rule with a built-in rule's id
    replaces it; ``disable`` removes built-in rules by id; ``parent_trace_id``,
    ``group_by`` and ``default_project_id`` replace the built-in lists when given.
    """
    builtin = builtin_document()
    user: dict[str, Any] = {}
    if user_file is not None:
        try:
            text = Path(user_file).read_text()
        except OSError as error:
            raise RuleError(f"cannot read rules file {user_file}: {error}") from error
        user = _load_document(text, str(user_file))

    user_rules = [_rule(raw, str(user_file)) for raw in (user.get("rules") or [])]
    replaced = {rule.id for rule in user_rules}
    disabled = set(user.get("disable") or [])
    builtin_ids = {raw.get("id") for raw in builtin.get("rules", [])}
    unknown = disabled - builtin_ids
    if unknown:
        raise RuleError(f"{user_file}: 'disable' names unknown built-in rules {sorted(unknown)}")
    builtin_rules = [
        _rule(raw, "builtin_rules.yaml")
        for raw in builtin.get("rules", [])
        if raw.get("id") not in replaced and raw.get("id") not in disabled
    ]
    seen: set[str] = set()
    for rule in user_rules:
        if rule.id in seen:
            raise RuleError(f"{user_file}: rule id {rule.id!r} appears twice")
        seen.add(rule.id)

    def pick(key: str) -> list[Source]:
        value = user[key] if key in user else builtin.get(key)
        return _sources(value, f"{key}")

    return RuleSet(
        user_rules + builtin_rules,
        default_project=pick("default_project_id"),
        parent_trace_id=pick("parent_trace_id"),
        group_by=pick("group_by"),
    )
