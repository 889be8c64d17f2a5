"""The C request scanner (enricher/receive/_wirescan.c) against the Python path (upb).

``RequestScanner.scan`` first runs a C pass that validates a serialized request and reads
what the pipeline needs of it; when the pass declines, upb decodes and validates instead
(``scan_decoded``). The C pass must be *safe*: whatever it accepts, upb accepts and
``validate`` passes, and its result describes the same request as the Python path. It may
decline valid requests (a cost in speed only), but not ordinary SDK-style ones.

* generated valid requests (protobuf classes, every AnyValue kind, events, links, ...): the
  C pass takes every one, and its result equals the Python path's exactly;
* byte-level mutations (flips, insertions, deletions, truncations, splices) and structural
  ones (unknown fields, repeated and grafted fields, reordering, non-minimal varints) of valid
  requests: what the C pass accepts is valid and scans the same; the rest raise InvalidPayload;
* hand-built cases: invalid UTF-8 at every level, ids of the wrong length, deep nesting,
  unknown fields of each wire type at every level, non-minimal tags, lengths and values.
"""

from __future__ import annotations

import copy
import os
import random
from dataclasses import dataclass

import pytest
from google.protobuf.descriptor import Descriptor
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    EntityRef,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from enricher.receive import scan as scan_module
from enricher.receive.decode import InvalidPayload, validate
from enricher.receive.scan import RequestScanner, ScannedRequest

# The C scanner is built by `pip install -e .` where a C compiler is: required in CI, skipped
# elsewhere (as in tests/enricher/test_pipeline_wire.py).
pytestmark = pytest.mark.skipif(
    scan_module._wirescan is None and not os.environ.get("CI"),
    reason="the C request scanner is not built (no C compiler?)",
)

KEYS = ("gen_ai.agent.name", "gen_ai.operation.name", "metadata.agent_id", "agentmon.announce")
TRACE = b"\x01" * 16
SPAN = b"\x02" * 8
PARENT = b"\x03" * 8

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ---- checking one payload -------------------------------------------------------------------


def c_scan(scanner: RequestScanner, payload: bytes):
    """The C pass's raw answer: a tuple, or None when it declines."""
    return scan_module._wirescan.scan(payload, scanner._schema, scanner._encoded_keys)


def upb_verdict(payload: bytes) -> tuple[ExportTraceServiceRequest | None, str]:
    """The request if upb decodes it and validate passes, else None and why not."""
    try:
        request = ExportTraceServiceRequest.FromString(payload)
    except Exception as error:  # noqa: BLE001 - any refusal by upb counts
        return None, f"upb rejects it: {error!r}"
    try:
        validate(request)
    except InvalidPayload as error:
        return None, f"validate rejects it: {error}"
    return request, ""


def all_spans(request: ExportTraceServiceRequest) -> list[Span]:
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def expected_hits(keys: tuple[str, ...], request: ExportTraceServiceRequest) -> dict[int, int]:
    """Span index -> bitmask of ``keys`` among the keys of its own attributes (as upb decodes
    them: a KeyValue's key is its last key field). Event and link attributes do not count."""
    bits = {key: 1 << bit for bit, key in enumerate(sorted(set(keys)))}
    hits = {}
    for index, span in enumerate(all_spans(request)):
        mask = 0
        for kv in span.attributes:
            mask |= bits.get(kv.key, 0)
        if mask:
            hits[index] = mask
    return hits


def same_message(a, b) -> bool:
    """Equal messages (by deterministic encoding, so that a NaN double equals itself)."""
    return type(a) is type(b) and a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def assert_same_scan(native: ScannedRequest, python: ScannedRequest, request: ExportTraceServiceRequest,
                     payload: bytes, keys: tuple[str, ...]) -> None:
    """``native`` (the C pass's result for ``payload``) describes ``request`` as ``python`` does."""
    spans = all_spans(request)
    assert native.payload == payload
    assert native.span_count == python.span_count == len(spans)
    assert native.ids == python.ids == [(s.trace_id, s.span_id, s.parent_span_id) for s in spans]
    hits = expected_hits(keys, request)
    assert python.hits == hits, "the Python path counts only Span.attributes keys, as upb decodes them"
    assert native.hits == hits, "hit masks differ from the keys of the spans' attributes as upb decodes them"
    assert native.links == python.links == {i: s.links[0].trace_id for i, s in enumerate(spans) if len(s.links)}
    assert len(native.fields) == len(native.starts) == len(native.ends) == len(spans)
    for index, span in enumerate(spans):
        tag, pos = read_varint(payload, native.fields[index])
        length, pos = read_varint(payload, pos)
        assert tag == 0x12 and pos == native.starts[index] and native.ends[index] - pos == length
        assert same_message(Span.FromString(native.span_bytes(index)), span), f"span {index} differs"
    if python.payload == payload:  # the Python path laid out these bytes, not its own encoding
        assert (native.fields, native.starts, native.ends) == (python.fields, python.starts, python.ends)
    assert len(native.resources) == len(python.resources) == len(request.resource_spans)
    for n_res, p_res, rs in zip(native.resources, python.resources, request.resource_spans):
        if python.payload == payload:
            assert (n_res.field_start, n_res.body_start, n_res.body_end) == (
                p_res.field_start, p_res.body_start, p_res.body_end)
        assert same_message(ResourceSpans.FromString(payload[n_res.body_start:n_res.body_end]), rs)
        if rs.HasField("resource"):
            assert same_message(Resource.FromString(n_res.resource), rs.resource)
            assert same_message(Resource.FromString(p_res.resource), rs.resource)
        else:
            assert n_res.resource == p_res.resource == b""
        assert n_res.schema_url == p_res.schema_url == rs.schema_url
        assert len(n_res.scopes) == len(p_res.scopes) == len(rs.scope_spans)
        for n_sc, p_sc, ss in zip(n_res.scopes, p_res.scopes, rs.scope_spans):
            if python.payload == payload:
                assert (n_sc.field_start, n_sc.body_start, n_sc.body_end) == (
                    p_sc.field_start, p_sc.body_start, p_sc.body_end)
            assert same_message(ScopeSpans.FromString(payload[n_sc.body_start:n_sc.body_end]), ss)
            if ss.HasField("scope"):
                assert same_message(InstrumentationScope.FromString(n_sc.scope), ss.scope)
                assert same_message(InstrumentationScope.FromString(p_sc.scope), ss.scope)
            else:
                assert n_sc.scope == p_sc.scope == b""
            assert n_sc.name == p_sc.name == ss.scope.name
            assert n_sc.schema_url == p_sc.schema_url == ss.schema_url
            assert (n_sc.first, n_sc.count) == (p_sc.first, p_sc.count)
            assert native.ids[n_sc.first:n_sc.first + n_sc.count] == [
                (s.trace_id, s.span_id, s.parent_span_id) for s in ss.spans]


def check_safe(payload: bytes, keys: tuple[str, ...] = KEYS) -> bool:
    """The safety property for any bytes: whatever the C pass accepts is valid and scans as the
    Python path scans it; an invalid payload raises InvalidPayload (nothing else) on both
    paths. Returns whether the C pass accepted."""
    scanner = RequestScanner(keys)
    python_scanner = RequestScanner(keys, native=False)
    found = c_scan(scanner, payload)
    request, why = upb_verdict(payload)
    if found is not None:
        assert request is not None, f"the C pass accepted {payload!r}, but {why}"
    if request is None:
        with pytest.raises(InvalidPayload):
            python_scanner.scan(payload)
        with pytest.raises(InvalidPayload):
            scanner.scan(payload)
        assert scanner.declined == 1
        return False
    python = python_scanner.scan(payload)
    native = scanner.scan(payload)
    assert scanner.declined == (found is None)
    if found is None:  # the native scanner took the Python path itself
        assert native == python
        assert python.ids == [(s.trace_id, s.span_id, s.parent_span_id) for s in all_spans(request)]
        assert python.hits == expected_hits(keys, request)
        return False
    assert_same_scan(native, python, request, payload, keys)
    return True


# ---- generated valid requests ---------------------------------------------------------------

texts = st.text(max_size=10)  # any code points but surrogates, non-ASCII included
uint32 = st.integers(0, 2**32 - 1)
uint64 = st.integers(0, 2**64 - 1)
keys = st.one_of(st.sampled_from(KEYS), texts)
scalar_values = st.one_of(
    st.just(AnyValue()),
    st.builds(lambda v: AnyValue(string_value=v), texts),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.builds(lambda v: AnyValue(int_value=v), st.integers(-2**63, 2**63 - 1)),
    st.builds(lambda v: AnyValue(double_value=v), st.floats(allow_nan=False)),
    st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=10)),
    st.builds(lambda v: AnyValue(string_value_strindex=v), st.integers(-2**31, 2**31 - 1)),
)
any_values = st.recursive(
    scalar_values,
    lambda children: st.one_of(
        st.builds(lambda vs: AnyValue(array_value=ArrayValue(values=vs)), st.lists(children, max_size=3)),
        st.builds(
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])),
            st.lists(st.tuples(keys, children), max_size=3),
        ),
    ),
    max_leaves=8,
)
key_values = st.one_of(
    st.builds(lambda k, v: KeyValue(key=k, value=v), keys, any_values),
    st.builds(lambda k: KeyValue(key=k), keys),
    st.builds(lambda i: KeyValue(key_strindex=i), st.integers(-2**31, 2**31 - 1)),
)
attributes = st.lists(key_values, max_size=5)
ids16 = st.binary(min_size=16, max_size=16)
ids8 = st.binary(min_size=8, max_size=8)
events = st.builds(Span.Event, time_unix_nano=uint64, name=texts, attributes=attributes,
                   dropped_attributes_count=uint32)
links = st.builds(Span.Link, trace_id=st.one_of(st.just(b""), ids16), span_id=st.one_of(st.just(b""), ids8),
                  trace_state=texts, attributes=attributes, dropped_attributes_count=uint32, flags=uint32)


@st.composite
def spans(draw) -> Span:
    span = Span(
        trace_id=draw(ids16), span_id=draw(ids8), parent_span_id=draw(st.one_of(st.just(b""), ids8)),
        trace_state=draw(texts), name=draw(texts), kind=draw(st.integers(0, 5)),
        start_time_unix_nano=draw(uint64), end_time_unix_nano=draw(uint64),
        attributes=draw(attributes), dropped_attributes_count=draw(uint32),
        events=draw(st.lists(events, max_size=3)), dropped_events_count=draw(uint32),
        links=draw(st.lists(links, max_size=3)), dropped_links_count=draw(uint32), flags=draw(uint32),
    )
    if draw(st.booleans()):
        span.status.CopyFrom(Status(message=draw(texts), code=draw(st.integers(0, 2))))
    return span


@st.composite
def scope_spans(draw) -> ScopeSpans:
    scope = ScopeSpans(spans=draw(st.lists(spans(), max_size=4)), schema_url=draw(texts))
    if draw(st.booleans()):
        scope.scope.CopyFrom(InstrumentationScope(
            name=draw(texts), version=draw(texts), attributes=draw(attributes), dropped_attributes_count=draw(uint32)))
    return scope


@st.composite
def resource_spans(draw) -> ResourceSpans:
    resource = ResourceSpans(scope_spans=draw(st.lists(scope_spans(), max_size=3)), schema_url=draw(texts))
    if draw(st.booleans()):
        refs = draw(st.lists(st.builds(EntityRef, schema_url=texts, type=texts, id_keys=st.lists(texts, max_size=2),
                                       description_keys=st.lists(texts, max_size=2)), max_size=2))
        resource.resource.CopyFrom(Resource(attributes=draw(attributes), dropped_attributes_count=draw(uint32),
                                            entity_refs=refs))
    return resource


requests = st.builds(ExportTraceServiceRequest, resource_spans=st.lists(resource_spans(), max_size=3))


def keys_elsewhere_request() -> ExportTraceServiceRequest:
    """Scanned keys only in event, link, scope, resource and nested kvlist attributes (none
    count), and a span with one key twice and two keys once."""
    kv = [KeyValue(key=key, value=AnyValue(string_value="x")) for key in KEYS]
    nested = KeyValue(key="outer", value=AnyValue(kvlist_value=KeyValueList(values=kv)))
    quiet = Span(trace_id=TRACE, span_id=SPAN, name="quiet", attributes=[nested],
                 events=[Span.Event(name="e", attributes=kv)],
                 links=[Span.Link(trace_id=TRACE, span_id=PARENT, attributes=kv)])
    loud = Span(trace_id=TRACE, span_id=PARENT, name="loud", attributes=[kv[0], kv[2], kv[0]])
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=kv),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="s", attributes=kv), spans=[quiet, loud])],
    )])


@FUZZ
@given(request=requests)
@example(request=ExportTraceServiceRequest())
@example(request=keys_elsewhere_request())
def test_generated_requests_scan_natively_and_as_the_python_path(request: ExportTraceServiceRequest) -> None:
    payload = request.SerializeToString()
    scanner = RequestScanner(KEYS)
    native = scanner.scan(payload)
    assert scanner.declined == 0, "the C pass declined a valid request as the protobuf library encodes it"
    python = RequestScanner(KEYS, native=False).scan(payload)
    assert python.payload == payload  # upb's encoding has the usual shape: positions are comparable
    assert native == python
    decoded = ExportTraceServiceRequest.FromString(payload)
    assert_same_scan(native, python, decoded, payload, KEYS)
    assert native.hits == expected_hits(KEYS, request)
    event(f"spans with hits: {min(len(native.hits), 3)}")


def test_keys_outside_span_attributes_are_no_hits() -> None:
    payload = keys_elsewhere_request().SerializeToString()
    scanner = RequestScanner(KEYS)
    native = scanner.scan(payload)
    python = RequestScanner(KEYS, native=False).scan(payload)
    assert scanner.declined == 0
    bit = {key: 1 << i for i, key in enumerate(scanner.keys)}
    assert native.hits == python.hits == {1: bit[KEYS[0]] | bit[KEYS[2]]}
    assert native == python


def test_an_sdk_request_scans_natively() -> None:
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, Status as SdkStatus, StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "svc", "ünïcode": "✓"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for scope in ("agent", "llm"):
        tracer = provider.get_tracer(scope, "1.0", schema_url="https://opentelemetry.io/schemas/1.26.0")
        with tracer.start_as_current_span("run", attributes={"gen_ai.agent.name": "bot", "n": 3, "f": 0.5,
                                                             "b": True, "l": ["a", "b"]}) as root:
            root.add_event("started", {"gen_ai.operation.name": "x"})
            with tracer.start_as_current_span("chat ✨", links=[Link(root.get_span_context(), {"k": 1})]) as child:
                child.set_attribute("gen_ai.operation.name", "chat")
                child.set_status(SdkStatus(StatusCode.ERROR, "bad"))
    payload = encode_spans(exporter.get_finished_spans()).SerializeToString()
    scanner = RequestScanner(KEYS)
    native = scanner.scan(payload)
    python = RequestScanner(KEYS, native=False).scan(payload)
    assert scanner.declined == 0
    assert native == python and native.span_count == 4
    assert len(native.hits) == 4 and len(native.links) == 2
    provider.shutdown()


# ---- byte-level mutations -------------------------------------------------------------------

SEEDS = [
    keys_elsewhere_request().SerializeToString(),
    ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[
        Span(trace_id=TRACE, span_id=SPAN, parent_span_id=PARENT, name="é", status=Status(message="m", code=2),
             links=[Span.Link(trace_id=TRACE, span_id=SPAN)], flags=0x301),
    ])])]).SerializeToString(),
]


def mutate(data: st.DataObject, payload: bytes) -> bytes:
    out = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice", "copy"]), label="op")
        n = len(out)
        if op == "flip" and n:
            i = data.draw(st.integers(0, n - 1))
            out[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and n:
            out[data.draw(st.integers(0, n - 1))] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x12, 0x0A]))
        elif op == "insert":
            i = data.draw(st.integers(0, n))
            out[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and n:
            i = data.draw(st.integers(0, n - 1))
            del out[i:i + data.draw(st.integers(1, 4))]
        elif op == "truncate":
            del out[data.draw(st.integers(0, n)):]
        elif op in ("splice", "copy") and n:
            # splice: a piece of another valid request; copy: a piece of this one, elsewhere
            source = bytes(out) if op == "copy" else data.draw(st.sampled_from(SEEDS))
            a = data.draw(st.integers(0, len(source)))
            b = data.draw(st.integers(a, len(source)))
            i = data.draw(st.integers(0, n))
            j = data.draw(st.integers(i, min(n, i + 8)))
            out[i:j] = source[a:b]
    return bytes(out)


@FUZZ
@given(data=st.data())
def test_mutated_payloads_are_accepted_only_when_valid_and_then_scan_the_same(data: st.DataObject) -> None:
    base = data.draw(st.one_of(st.sampled_from(SEEDS), requests.map(lambda r: r.SerializeToString())), label="base")
    payload = mutate(data, base)
    note(f"payload = {payload!r}")
    accepted = check_safe(payload)
    event("C accepted" if accepted else "C declined")


# ---- structural mutations -------------------------------------------------------------------


@dataclass
class Field:
    number: int
    wire_type: int
    value: int | bytes | Node  # a varint, fixed or length-delimited bytes, or a known sub-message


@dataclass
class Node:
    descriptor: Descriptor
    fields: list[Field]

    def __deepcopy__(self, memo: dict) -> Node:  # descriptors are shared, not copied
        return Node(self.descriptor, copy.deepcopy(self.fields, memo))

    def __repr__(self) -> str:
        return f"<{self.descriptor.name}: {len(self.fields)} fields>"


def parse(data: bytes, descriptor: Descriptor) -> Node:
    """A message's fields as they are on the wire, its known sub-messages parsed too."""
    fields, pos = [], 0
    while pos < len(data):
        tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = read_varint(data, pos)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        else:
            assert wire_type == 2
            length, pos = read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
            known = descriptor.fields_by_number.get(number)
            if known is not None and known.message_type is not None:
                value = parse(value, known.message_type)
        fields.append(Field(number, wire_type, value))
    return Node(descriptor, fields)


def varint(value: int, extra: int = 0) -> bytes:
    """``value`` as a varint, with ``extra`` redundant bytes (a non-minimal encoding)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    if extra:
        out[-1] |= 0x80
        out += b"\x80" * (extra - 1) + b"\x00"
    return bytes(out)


def no_padding(kind: str, minimal: int) -> int:
    return 0


def emit(node: Node, pad=no_padding) -> bytes:
    """The message's bytes; ``pad(kind, minimal size)`` gives the redundant bytes of each tag,
    length and varint value (kind "tag", "length" or "value")."""
    out = bytearray()
    for f in node.fields:
        tag = (f.number << 3) | f.wire_type
        out += varint(tag, pad("tag", len(varint(tag))))
        if f.wire_type == 0:
            out += varint(f.value, pad("value", len(varint(f.value))))
        elif f.wire_type == 2:
            body = emit(f.value, pad) if isinstance(f.value, Node) else f.value
            out += varint(len(body), pad("length", len(varint(len(body))))) + body
        else:
            out += f.value
    return bytes(out)


def nodes(node: Node):
    yield node
    for f in node.fields:
        if isinstance(f.value, Node):
            yield from nodes(f.value)


def unknown_numbers(descriptor: Descriptor) -> list[int]:
    """Field numbers the message does not know: the first gap, one past the last, one above the
    C schema's table limit (4096), and the largest."""
    known = set(descriptor.fields_by_number)
    gap = next(n for n in range(1, 10**6) if n not in known)
    return sorted({gap, max(known) + 1, 5000, 2**29 - 1})


UNKNOWN_VALUES = {0: 2**63 + 5, 1: b"\xff" * 8, 2: b"\xc3\x28\x00raw", 5: b"\x80\x00\x00\x7f"}


def request_with_every_message() -> ExportTraceServiceRequest:
    kv = [
        KeyValue(key="gen_ai.agent.name", value=AnyValue(array_value=ArrayValue(values=[
            AnyValue(int_value=-1), AnyValue(kvlist_value=KeyValueList(values=[
                KeyValue(key="inner", value=AnyValue(bytes_value=b"\x00\xff"))]))]))),
        KeyValue(key="d", value=AnyValue(double_value=1.5)),
    ]
    span = Span(trace_id=TRACE, span_id=SPAN, parent_span_id=PARENT, name="n", kind=2, attributes=kv,
                events=[Span.Event(name="e", attributes=kv)], status=Status(message="m", code=1),
                links=[Span.Link(trace_id=TRACE, span_id=PARENT, attributes=kv)], flags=1)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=kv, entity_refs=[EntityRef(type="t", id_keys=["a"])]), schema_url="r",
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="s", version="1", attributes=kv),
                                spans=[span, Span(trace_id=TRACE, span_id=PARENT)], schema_url="u")],
    )])


@FUZZ
@given(data=st.data(), request=st.one_of(st.just(request_with_every_message()), requests))
def test_restructured_requests_are_accepted_only_when_valid_and_then_scan_the_same(data, request) -> None:
    """Rewrites of a valid request: unknown fields, known field numbers with another wire type,
    repeated, grafted, dropped and reordered fields, non-minimal varints. Each result is checked like any mutated payload."""
    tree = parse(request.SerializeToString(), ExportTraceServiceRequest.DESCRIPTOR)
    everything = list(nodes(tree))
    for _ in range(data.draw(st.integers(0, 3), label="rewrites")):
        node = everything[data.draw(st.integers(0, len(everything) - 1), label="node")]
        op = data.draw(st.sampled_from(["unknown", "retype", "repeat", "graft", "drop", "shuffle"]), label="op")
        if op == "unknown":
            wire_type = data.draw(st.sampled_from(sorted(UNKNOWN_VALUES)))
            number = data.draw(st.sampled_from(unknown_numbers(node.descriptor)))
            at = data.draw(st.integers(0, len(node.fields)))
            node.fields.insert(at, Field(number, wire_type, UNKNOWN_VALUES[wire_type]))
        elif not node.fields:
            continue
        elif op == "retype":  # a known field number with another wire type (upb keeps it as unknown)
            f = data.draw(st.sampled_from(node.fields))
            wire_type = data.draw(st.sampled_from(sorted(UNKNOWN_VALUES)))
            node.fields.insert(data.draw(st.integers(0, len(node.fields))),
                               Field(f.number, wire_type, UNKNOWN_VALUES[wire_type]))
        elif op == "repeat":
            f = data.draw(st.sampled_from(node.fields))
            node.fields.insert(data.draw(st.integers(0, len(node.fields))), copy.deepcopy(f))
        elif op == "graft":  # a field of the same message type from elsewhere, added here
            f = data.draw(st.sampled_from(node.fields))
            donors = [g for other in everything if other.descriptor is node.descriptor
                      for g in other.fields if g.number == f.number]
            g = data.draw(st.sampled_from(donors))
            node.fields.insert(data.draw(st.integers(0, len(node.fields))), copy.deepcopy(g))
        elif op == "drop":
            del node.fields[data.draw(st.integers(0, len(node.fields) - 1))]
        else:
            random.Random(data.draw(st.integers(0, 2**32))).shuffle(node.fields)
    # Redundant bytes for the first tags, lengths and varint values, in encoding order.
    padding = iter(data.draw(st.lists(st.one_of(st.just(0), st.integers(1, 9)), max_size=40), label="padding"))

    def pad(kind: str, minimal: int) -> int:
        return min(next(padding, 0), 10 - minimal)

    payload = emit(tree, pad)
    note(f"payload = {payload!r}")
    event("C accepted" if check_safe(payload) else "C declined")


# ---- invalid UTF-8 --------------------------------------------------------------------------


def _deep(text: str) -> AnyValue:
    inner = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value=text)]))
    kvlist = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=inner)]))
    return AnyValue(array_value=ArrayValue(values=[AnyValue(array_value=ArrayValue(values=[kvlist]))]))


def _request_with(where: str, text: str) -> ExportTraceServiceRequest:
    """A valid request with ``text`` in one string field, every other string ASCII."""
    def at(place: str, default: str = "ok") -> str:
        return text if place == where else default

    span = Span(
        trace_id=TRACE, span_id=SPAN, name=at("span name"), trace_state=at("span trace_state"),
        attributes=[KeyValue(key=at("span attribute key", "gen_ai.agent.name"), value=AnyValue(string_value="v")),
                    KeyValue(key="deep", value=_deep(at("string deep in an array"))),
                    KeyValue(key="kv", value=AnyValue(kvlist_value=KeyValueList(values=[
                        KeyValue(key=at("kvlist key"), value=AnyValue(bool_value=True))])))],
        events=[Span.Event(name=at("event name"), attributes=[
            KeyValue(key=at("event attribute key"), value=AnyValue(string_value=at("event attribute value")))])],
        links=[Span.Link(trace_id=TRACE, span_id=PARENT, trace_state=at("link trace_state"), attributes=[
            KeyValue(key="l", value=AnyValue(string_value=at("link attribute value")))])],
        status=Status(message=at("status message"), code=2),
    )
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(
            attributes=[KeyValue(key=at("resource attribute key"), value=AnyValue(string_value="v"))],
            entity_refs=[EntityRef(type=at("entity ref type"), id_keys=["a", at("entity ref id key")])],
        ),
        schema_url=at("resource schema_url"),
        scope_spans=[ScopeSpans(
            scope=InstrumentationScope(name=at("scope name"), version=at("scope version"), attributes=[
                KeyValue(key="s", value=AnyValue(string_value=at("scope attribute value")))]),
            schema_url=at("scope schema_url"),
            spans=[span],
        )],
    )])


STRING_PLACES = [
    "span attribute key", "string deep in an array", "kvlist key", "span name", "span trace_state",
    "scope name", "scope version", "scope attribute value", "scope schema_url", "resource attribute key",
    "resource schema_url", "entity ref type", "entity ref id key", "status message", "event name",
    "event attribute key", "event attribute value", "link trace_state", "link attribute value",
]
BAD_UTF8 = [
    b"\xc3\x28",  # a lead byte without its continuation
    b"\x80",  # a lone continuation byte
    b"\xff", b"\xfe",
    b"\xc0\xaf", b"\xc1\xbf",  # overlong two-byte encodings
    b"\xe0\x80\xaf", b"\xe0\x9f\xbf",  # overlong three-byte
    b"\xf0\x80\x80\xaf", b"\xf0\x8f\xbf\xbf",  # overlong four-byte
    b"\xed\xa0\x80", b"\xed\xbf\xbf",  # surrogates U+D800, U+DFFF
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf7\xbf\xbf\xbf",  # above U+10FFFF
    b"\xe2\x82", b"\xf0\x9f\x98",  # truncated at the end of the string
    b"\xe2\x28\xa1", b"\xf0\x9f\x28\x80",  # a bad continuation inside
    b"ok\xf8\x88\x80\x80\x80",  # five-byte form
]
GOOD_UTF8 = ["\u0080", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0010ffff", "\x00",
             "é" * 9 + "a"]  # the last crosses the C pass's eight-byte ASCII stride


def _placed(where: str, raw: bytes) -> bytes:
    """The request with the raw bytes ``raw`` (of any validity) in the field at ``where``."""
    placeholder = "\x7f" * len(raw)
    payload = _request_with(where, placeholder).SerializeToString()
    assert payload.count(placeholder.encode()) == 1
    return payload.replace(placeholder.encode(), raw)


@pytest.mark.parametrize("where", STRING_PLACES)
def test_invalid_utf8_anywhere_is_declined_and_refused(where: str) -> None:
    for good in GOOD_UTF8:
        payload = _placed(where, good.encode())
        assert check_safe(payload), f"a valid string {good!r} at {where} was declined"
    for bad in BAD_UTF8:
        payload = _placed(where, bad)
        scanner = RequestScanner(KEYS)
        assert c_scan(scanner, payload) is None, f"the C pass accepted {bad!r} at {where}: {payload!r}"
        with pytest.raises(InvalidPayload):
            scanner.scan(payload)
        assert scanner.declined == 1
        check_safe(payload)


# ---- ids of the wrong length ----------------------------------------------------------------


@pytest.mark.parametrize(("span", "link"), [
    pytest.param(dict(trace_id=b"\x01" * 15), None, id="trace_id 15"),
    pytest.param(dict(trace_id=b"\x01" * 17), None, id="trace_id 17"),
    pytest.param(dict(trace_id=b""), None, id="trace_id absent"),
    pytest.param(dict(span_id=b"\x02" * 9), None, id="span_id 9"),
    pytest.param(dict(span_id=b""), None, id="span_id absent"),
    pytest.param(dict(parent_span_id=b"\x03" * 7), None, id="parent 7"),
    pytest.param(dict(parent_span_id=b"\x03" * 16), None, id="parent 16"),
    pytest.param({}, dict(trace_id=b"\x01" * 3), id="link trace_id 3"),
    pytest.param({}, dict(trace_id=TRACE, span_id=b"\x02" * 5), id="link span_id 5"),
])
def test_wrong_id_lengths_are_refused(span: dict, link: dict | None) -> None:
    fields = dict(trace_id=TRACE, span_id=SPAN, name="s") | span
    bad = Span(**fields, links=[Span.Link(**link)] if link else [])
    for spans_ in ([bad], [Span(trace_id=TRACE, span_id=SPAN), bad]):
        payload = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[
            ScopeSpans(spans=spans_)])]).SerializeToString()
        ExportTraceServiceRequest.FromString(payload)  # upb decodes it: only validate refuses it
        scanner = RequestScanner(KEYS)
        assert c_scan(scanner, payload) is None
        with pytest.raises(InvalidPayload):
            scanner.scan(payload)
        assert not check_safe(payload)


# ---- nesting --------------------------------------------------------------------------------


def ld(number: int, body: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(body)) + body


def _nested_request(depth: int, kind: str) -> bytes:
    """By hand: a span attribute whose AnyValue nests ``depth`` arrays (or kvlists)."""
    value = ld(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        if kind == "array":
            value = ld(5, ld(1, value))  # AnyValue.array_value > ArrayValue.values
        else:
            value = ld(6, ld(1, ld(1, b"k") + ld(2, value)))  # kvlist_value > values > KeyValue
    span = ld(1, TRACE) + ld(2, SPAN) + ld(9, ld(1, b"gen_ai.agent.name") + ld(2, value))
    return ld(1, ld(2, ld(2, span)))


@pytest.mark.parametrize("kind", ["array", "kvlist"])
@pytest.mark.parametrize("depth", [1, 10, 20, 21, 22, 30, 45, 47, 48, 60])
def test_deep_nesting_is_scanned_or_refused_clearly(depth: int, kind: str) -> None:
    payload = _nested_request(depth, kind)
    accepted = check_safe(payload)
    if depth == 1:
        assert accepted  # an ordinary array attribute is taken natively
    if depth == 60:
        assert upb_verdict(payload)[0] is None  # beyond upb's depth limit: refused, clearly
        with pytest.raises(InvalidPayload):
            RequestScanner(KEYS).scan(payload)


# ---- unknown fields -------------------------------------------------------------------------


def test_unknown_fields_of_every_wire_type_at_every_level_are_accepted() -> None:
    tree = parse(request_with_every_message().SerializeToString(), ExportTraceServiceRequest.DESCRIPTOR)
    levels = list(nodes(tree))
    covered = {node.descriptor.full_name for node in levels}
    schema = set()
    pending = [ExportTraceServiceRequest.DESCRIPTOR]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name not in schema:
            schema.add(descriptor.full_name)
            pending += [f.message_type for f in descriptor.fields if f.message_type is not None]
    assert covered == schema  # every message type of the schema is somewhere in the request
    checked = 0
    for level in range(len(levels)):
        for wire_type, value in UNKNOWN_VALUES.items():
            for number in unknown_numbers(levels[level].descriptor):
                for at in ("first", "last"):
                    copy_ = copy.deepcopy(tree)
                    node = list(nodes(copy_))[level]
                    unknown = Field(number, wire_type, value)
                    node.fields.insert(0 if at == "first" else len(node.fields), unknown)
                    payload = emit(copy_)
                    assert check_safe(payload), (
                        f"unknown field {number} (wire type {wire_type}) {at} in {node.descriptor.full_name} "
                        f"was declined: {payload!r}")
                    checked += 1
    assert checked > 500


# ---- non-minimal varints --------------------------------------------------------------------

MINIMAL_ODD_ENCODINGS = [
    pytest.param(b"\x8a\x80\x80\x80\x00\x00", id="5-byte tag of an empty ResourceSpans"),
    pytest.param(b"\x8a\x80\x80\x80\x80\x00\x00", id="6-byte tag of an empty ResourceSpans"),
    pytest.param(b"\x0a\x80\x80\x80\x80\x00", id="5-byte length of an empty ResourceSpans"),
    pytest.param(b"\x0a\x80\x80\x80\x80\x80\x00", id="6-byte length of an empty ResourceSpans"),
    pytest.param(b"\xfa\x01\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", id="10-byte length of an unknown field"),
    pytest.param(b"\xf8\x01" + b"\x80" * 9 + b"\x01", id="10-byte unknown varint"),
    pytest.param(b"\xf8\x01" + b"\xff" * 9 + b"\x7f", id="10-byte unknown varint beyond 64 bits"),
]


@pytest.mark.parametrize("payload", MINIMAL_ODD_ENCODINGS)
def test_odd_varints_are_accepted_only_when_upb_accepts_them(payload: bytes) -> None:
    check_safe(payload)


@pytest.mark.parametrize("width", [2, 3, 5, 6, 8, 10])
@pytest.mark.parametrize("kind", ["tag", "length", "value"])
def test_non_minimal_varints_scan_the_same_or_are_declined(kind: str, width: int) -> None:
    """Every tag (or length, or varint value) of a rich request widened to ``width`` bytes."""
    tree = parse(request_with_every_message().SerializeToString(), ExportTraceServiceRequest.DESCRIPTOR)
    payload = emit(tree, lambda k, minimal: max(0, width - minimal) if k == kind else 0)
    check_safe(payload)


# ---- hit masks as upb decodes keys ----------------------------------------------------------


@pytest.mark.parametrize(("first", "last"), [("gen_ai.agent.name", "other"), ("other", "gen_ai.agent.name"),
                                             ("gen_ai.agent.name", "agentmon.announce")])
def test_a_key_value_with_two_key_fields_hits_by_its_last_key(first: str, last: str) -> None:
    """upb keeps the last of a singular field's occurrences: KeyValue.key is the last key."""
    kv = ld(1, first.encode()) + ld(1, last.encode()) + ld(2, ld(1, b"v"))
    payload = ld(1, ld(2, ld(2, ld(1, TRACE) + ld(2, SPAN) + ld(9, kv))))
    request, _ = upb_verdict(payload)
    assert request is not None and all_spans(request)[0].attributes[0].key == last
    check_safe(payload)
