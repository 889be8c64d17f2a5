"""Fuzzing the identity parsers with hostile and random input (issue 7).

structured.py must read any string without raising, evaluating or blowing its bounds, and
read back exactly the small dicts LiteLLM (Python repr) and OpenInference (JSON) write. The
rule engine must never raise on a span's attribute maps, whatever their keys, value kinds and
contents, and what it answers must always be a usable identity.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from enricher.identify.rules import (
    AttributeSource,
    Identification,
    LiteralSource,
    NameSource,
    RuleSet,
    SpanView,
    any_value_text,
    load_rules,
)
from enricher.identify.structured import MAX_DEPTH, MAX_ITEMS, MAX_TEXT, field_text, parse_mapping
from registry_api.store.identity import AGENT_TYPES

# ast.parse warns about odd escapes in random text ("\d"); that is noise here, not a failure.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::SyntaxWarning")



def fuzz(examples: int) -> settings:
    """Bounded runs: the whole file stays within a few seconds on two cores."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )

# ---- structured.py -----------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**127), max_value=2**127 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
keys = st.one_of(st.text(max_size=12), st.integers(-1000, 1000), st.booleans(), st.none())


def literals(max_leaves: int = 25):
    """Values a Python repr or JSON text of a small metadata dict can hold (within the bounds)."""
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.tuples(inner, inner),
            st.dictionaries(keys, inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def normalised(value):
    """What parse_mapping gives back for ``value``: tuples become lists, keys become text."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[key if isinstance(key, str) else str(key)] = normalised(item)
        return out
    if isinstance(value, (list, tuple)):
        return [normalised(item) for item in value]
    return value


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _count(value) -> int:
    if isinstance(value, dict):
        return 1 + sum(1 + _count(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return 1 + sum(_count(v) for v in value)
    return 1


@fuzz(400)
@given(st.dictionaries(keys, literals(), max_size=6))
def test_python_repr_of_any_small_dict_reads_back_exactly(value: dict) -> None:
    text = repr(value)
    assert _depth(value) <= MAX_DEPTH and _count(value) <= MAX_ITEMS  # the generator stays in bounds
    if len(text) > MAX_TEXT:
        assert parse_mapping(text) is None
        return
    assert parse_mapping(text) == normalised(value)


@fuzz(250)
@given(st.dictionaries(st.text(max_size=12), literals().map(lambda v: json.loads(json.dumps(v))), max_size=6))
def test_json_of_any_small_dict_reads_back_exactly(value: dict) -> None:
    text = json.dumps(value)
    if len(text) > MAX_TEXT:
        assert parse_mapping(text) is None
        return
    assert parse_mapping(text) == json.loads(text)


# Hostile fragments: code, names, calls, operators, comprehensions, starred items, f-strings,
# walrus, lambdas, attribute access, subscripts, bytes, complex numbers, sets, Ellipsis.
_HOSTILE = [
    "__import__('os').system('true')", "open('/etc/passwd')", "x", "a.b", "a[0]", "1+1", "2**99999",
    "[i for i in range(9)]", "{**d}", "*a", "f'{x}'", "(y := 1)", "lambda: 0", "b'raw'", "1j", "{1, 2}",
    "...", "not 1", "~1", "+1", "-'s'", "-(1)", "0x" + "f" * 200, "1e999", "-1e999", "nan", "inf",
    "True or False", "print(1)", "(1,)", "()", "[]", "{}", "'\\x00'", "'\\ud800'", "None", "9" * 5000,
]


@st.composite
def mutated_mapping_text(draw) -> str:
    """Dict-like text with hostile values, broken syntax, deep nesting or a huge size."""
    kind = draw(st.sampled_from(["hostile", "broken", "deep", "wide", "big", "random"]))
    if kind == "hostile":
        parts = draw(st.lists(st.sampled_from(_HOSTILE), min_size=1, max_size=4))
        return "{" + ", ".join(f"'k{i}': {part}" for i, part in enumerate(parts)) + "}"
    if kind == "broken":
        text = repr(draw(st.dictionaries(st.text(max_size=8), literals(12), min_size=1, max_size=4)))
        cut = draw(st.integers(0, len(text)))
        junk = draw(st.text(alphabet="{}[](),:'\"\\ #=*.xN0-", max_size=6))
        return text[:cut] + junk + text[cut:]
    if kind == "deep":
        depth = draw(st.integers(MAX_DEPTH - 2, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("(", ")"), ("{'a': ", "}"), ('{"a": ', "}")]))
        return "{'k': " + opener * depth + "1" + closer * depth + "}"
    if kind == "wide":
        count = draw(st.integers(MAX_ITEMS - 5, MAX_ITEMS * 3))
        return "{" + ", ".join(f"'k{i}': {i}" for i in range(count)) + "}"
    if kind == "big":
        size = draw(st.integers(MAX_TEXT - 20, MAX_TEXT + 20))
        return ("{'agent_id': '" + "x" * size + "'}")[: draw(st.integers(1, size + 20))]
    return "{" + draw(st.text(max_size=200))


@fuzz(600)
@given(mutated_mapping_text())
def test_hostile_or_broken_text_never_raises(text: str) -> None:
    result = parse_mapping(text)
    assert result is None or isinstance(result, dict)
    for field in ("agent_id", "agent_name", "k0", "k", "a"):
        value = field_text(text, field)
        assert value is None or (isinstance(value, str) and value and value == value.strip())


def test_hostile_code_is_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = "{'agent_id': __import__('pathlib').Path(%r).write_text('x')}" % str(marker)
    assert parse_mapping(text) is None and field_text(text, "agent_id") is None
    assert not marker.exists()


# ---- the rule engine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules()


@pytest.fixture(scope="module")
def user_rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    """The built-ins behind user rules that use every kind of source and test."""
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(
        r"""
rules:
  - id: fuzz-regex
    when: {span.name: {regex: '^(?P<kind>agent|flow)[:/ ](?P<who>[^ ]{1,40})'}, scope.name: {prefix: x}}
    identity: {name: '={$kind}-{$who}', type: span:fuzz.type, project_id: [span:fuzz.project, =p], external_id: $who}
  - id: fuzz-dict
    when: {'span:fuzz.meta[agent_name]': {exists: true}, resource:fuzz.env: [prod, dev, '1', 'true']}
    identity: {name: 'span:fuzz.meta[agent_name]', agent_id: 'span:fuzz.meta[agent_id]', type: =autogen}
  - id: fuzz-literal
    when: {span:fuzz.flag: true, span:fuzz.n: {in: [1, '2', 3.5]}}
    identity: {name: '=n-{span:fuzz.n}-{resource:service.name}', project_id: resource:fuzz.project}
  - id: fuzz-resource
    when: {resource:fuzz.agent: {exists: true}}
    identity: {name: resource:fuzz.agent, type: resource:fuzz.type}
group_by: [resource:fuzz.group, resource:openinference.project.name]
"""
    )
    return load_rules(path)


def _attribute_keys(rule_set: RuleSet) -> tuple[list[str], list[str], list[str], list[str]]:
    """The span keys, resource keys, dict fields and condition values the rules read: the
    fuzzer aims at them, so that most views match some rule."""
    span_keys, resource_keys, fields = set(), set(), {"agent_id", "agent_name", "parent_trace_id"}
    wanted: set[str] = set()
    sources = list(rule_set.default_project) + list(rule_set.parent_trace_id_sources) + list(rule_set.group_by)
    for rule in rule_set.rules:
        sources += [c.source for c in rule.conditions]
        for condition in rule.conditions:
            wanted.update(condition.one_of or ())
            if condition.prefix:
                wanted.add(condition.prefix + "z")
        sources += rule.name + rule.type + rule.project_id + rule.external_id + rule.agent_id
    while sources:
        source = sources.pop()
        if isinstance(source, LiteralSource):
            sources += source.parts
        elif isinstance(source, AttributeSource):
            (span_keys if source.on_span else resource_keys).add(source.key)
            if source.dict_field:
                fields.add(source.dict_field)
    return sorted(span_keys), sorted(resource_keys), sorted(fields), sorted(wanted)


_TEXT_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\t\n", "x" * 300, " " + "y" * 260 + " ", "\x00", "\x1f", "agent", "flow:a b",
                     "agent/z", "AB" * 16, "0x" + "ab" * 16, "0" * 32, "true", "prod", "LLM", "CHAIN", "AGENT",
                     "invoke_agent", "chat", "autogen", "vanna", "langflow", "flowise", "custom", "\u202e",
                     "{'agent_name': ' '}", "{'agent_name': None}", "{'agent_id': 1e999}", "[1]", "{", "{}"]),
)


def any_values(fields: list[str], wanted: list[str]) -> st.SearchStrategy[AnyValue]:
    """Every kind of OTLP AnyValue, with dict-ish strings that name the fields the rules read."""
    dict_text = st.dictionaries(st.sampled_from(fields), st.one_of(scalars, _TEXT_VALUES), max_size=3).flatmap(
        lambda d: st.sampled_from([repr(d), json.dumps(d, default=str)])
    )
    leaves = st.one_of(
        st.sampled_from(wanted).map(lambda s: AnyValue(string_value=s)),
        st.sampled_from(wanted).map(lambda s: AnyValue(string_value=s)),
        _TEXT_VALUES.map(lambda s: AnyValue(string_value=s)),
        dict_text.map(lambda s: AnyValue(string_value=s)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
        st.floats().map(lambda f: AnyValue(double_value=f)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.binary(max_size=20).map(lambda b: AnyValue(bytes_value=b)),
        st.just(AnyValue()),  # no value set at all
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
            st.lists(st.tuples(st.text(max_size=8), inner), max_size=3).map(
                lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs]))
            ),
        ),
        max_leaves=6,
    )


def span_views(rule_set: RuleSet) -> st.SearchStrategy[SpanView]:
    """Random views, and views built to satisfy one rule's conditions (with random values in
    what the identity is read from, and random noise around them): most of these match."""
    span_keys, resource_keys, fields, wanted = _attribute_keys(rule_set)
    values = any_values(fields, wanted)
    span_attrs = st.dictionaries(st.one_of(st.sampled_from(span_keys), st.sampled_from(span_keys + resource_keys),
                                           st.text(max_size=15)), values, max_size=6)
    resource_attrs = st.dictionaries(st.one_of(st.sampled_from(resource_keys), st.sampled_from(span_keys),
                                               st.text(max_size=15)), values, max_size=4)
    names = st.one_of(_TEXT_VALUES, st.sampled_from(["Langflow", "Flowise", "agent:x", "flow/y z",
                                                     "Support Flow - 3fa85f64-5717-4562-b3fc-2c963f66afa6"]))
    scopes = st.one_of(_TEXT_VALUES, st.sampled_from(["langflow", "phoenix-tracer-1", "xyz", "x"]))
    random_views = st.builds(SpanView, span_attrs, resource_attrs, names, scopes)

    def as_any_value(draw, text: str) -> AnyValue:
        kind = draw(st.sampled_from(["string", "string", "typed"]))
        if kind == "typed" and text in ("true", "false"):
            return AnyValue(bool_value=text == "true")
        if kind == "typed" and re.fullmatch(r"-?[0-9]{1,18}", text):
            return AnyValue(int_value=int(text))
        return AnyValue(string_value=text)

    def place(draw, view: dict, source, value: AnyValue | str) -> None:
        if isinstance(source, LiteralSource):
            for part in source.parts:
                place(draw, view, part, draw(values))
        elif isinstance(source, NameSource):
            text = value if isinstance(value, str) else (any_value_text(value) or "")
            view["scope" if source.of_scope else "name"] = text
        elif isinstance(source, AttributeSource):
            if isinstance(value, str):
                value = as_any_value(draw, value)
            if source.dict_field:
                text = any_value_text(value)
                inner = {source.dict_field: text if text is not None else None}
                value = AnyValue(string_value=draw(st.sampled_from([repr(inner), json.dumps(inner)])))
            view["span" if source.on_span else "resource"][source.key] = value

    @st.composite
    def directed(draw) -> SpanView:
        rule = draw(st.sampled_from(rule_set.rules))
        view = {"span": draw(span_attrs), "resource": draw(resource_attrs), "name": draw(names),
                "scope": draw(scopes)}
        for condition in rule.conditions:
            if condition.exists is False:
                continue
            if condition.one_of:
                value = draw(st.sampled_from(sorted(condition.one_of)))
            elif condition.prefix is not None:
                value = condition.prefix + draw(st.text(max_size=20))
            elif condition.pattern is not None:
                value = draw(st.from_regex(condition.pattern))
            else:
                value = draw(st.one_of(values, _TEXT_VALUES.filter(str.strip)))
            place(draw, view, condition.source, value)
        for source in rule.name + rule.type + rule.project_id + rule.external_id + rule.agent_id:
            if draw(st.booleans()):
                place(draw, view, source, draw(st.one_of(values, _TEXT_VALUES)))
        return SpanView(view["span"], view["resource"], view["name"], view["scope"])

    return st.one_of(random_views, directed(), directed())


_VIEWS: dict[int, st.SearchStrategy[SpanView]] = {}


def _views(rule_set: RuleSet) -> st.SearchStrategy[SpanView]:
    if id(rule_set) not in _VIEWS:
        _VIEWS[id(rule_set)] = span_views(rule_set)
    return _VIEWS[id(rule_set)]


_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _check_answers(rule_set: RuleSet, view: SpanView) -> None:
    resource_match = rule_set.identify_resource(view.resource_attrs)
    found = rule_set.identify_span(view, resource_match)
    for answer in (found, resource_match[1] if resource_match else None):
        if answer is None:
            continue
        assert isinstance(answer, Identification)
        assert answer.identity is not None or answer.agent_id
        if answer.agent_id is not None:
            assert 0 < len(answer.agent_id) <= 255 and answer.agent_id == answer.agent_id.strip()
        identity = answer.identity
        if identity is not None:
            assert 0 < len(identity.name) <= 255 and identity.name == identity.name.strip()
            assert identity.type in AGENT_TYPES
            assert 0 < len(identity.project_id) <= 255
            assert identity.external_id is None or 0 < len(identity.external_id) <= 255
            assert len(identity.agent_id) == 36  # the UUIDv5 can always be derived
    linked = rule_set.parent_trace_id(view)
    assert linked is None or (_HEX32.match(linked) and linked != "0" * 32)
    group = rule_set.group_key(view.resource_attrs)
    assert group is None or isinstance(group, str)


@fuzz(500)
@given(data=st.data())
def test_builtin_rules_never_raise_and_answer_usable_identities(rules: RuleSet, data: st.DataObject) -> None:
    _check_answers(rules, data.draw(_views(rules)))


@fuzz(400)
@given(data=st.data())
def test_user_rules_with_every_source_kind_never_raise(user_rules: RuleSet, data: st.DataObject) -> None:
    _check_answers(user_rules, data.draw(_views(user_rules)))


@pytest.mark.parametrize(
    "value",
    [
        AnyValue(double_value=math.nan), AnyValue(double_value=-math.inf), AnyValue(int_value=-(2**63)),
        AnyValue(string_value=" " * 5000), AnyValue(string_value="{'agent_name': '" + "n" * 20_000 + "'}"),
        AnyValue(string_value="{'agent_name': " + "[" * 900 + "]" * 900 + "}"),
        AnyValue(string_value="{'agent_name': 0x" + "1" * 5000 + "}"),
    ],
)
def test_extreme_values_in_every_attribute_the_rules_read(rules: RuleSet, value: AnyValue) -> None:
    span_keys, resource_keys, _, _ = _attribute_keys(rules)
    everything = {key: value for key in span_keys + resource_keys}
    _check_answers(rules, SpanView(everything, everything, value.string_value, value.string_value))
