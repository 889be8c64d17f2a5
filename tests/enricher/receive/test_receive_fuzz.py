"""Fuzzing the OTLP receivers of a running enricher with malformed and odd input (issue 7).

Every bad request gets a clear error (gRPC INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for size,
with a message; HTTP 400/413/415 with a google.rpc.Status body in JSON or protobuf), every
valid request is accepted however odd, nothing crashes, and the enricher keeps serving: a
valid request sent afterwards is delivered downstream.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import socket
import time
import zlib
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from enricher.receive.decode import InvalidPayload, decode_json, decode_protobuf
from tests.enricher.conftest import wait_until
from tests.support.otlp_sink import OtlpTestSink
from tests.support.payloads import export_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MAX_REQUEST = 64 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
INVALID_ARGUMENT = 3


def fuzz(examples: int) -> settings:
    # One enricher serves every example of a test on purpose: it must keep serving.
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---- a running enricher ------------------------------------------------------------------


class Target:
    """The enricher under fuzz: its gRPC Export method and an HTTP client for /v1/traces."""

    def __init__(self, enricher, collector: OtlpTestSink) -> None:
        self.enricher = enricher
        self.collector = collector
        self.channel = grpc.insecure_channel(f"127.0.0.1:{enricher.grpc_port}")
        self.export = self.channel.unary_unary(EXPORT)
        self.url = f"http://127.0.0.1:{enricher.http_port}/v1/traces"
        self.http = httpx.Client(timeout=10)
        self.canary = 0

    def grpc_code(self, payload: bytes) -> tuple[grpc.StatusCode, str]:
        """The status of one Export call; RESOURCE_EXHAUSTED from a busy pipeline is retried."""
        for _ in range(50):
            try:
                self.export(payload, timeout=10)
                return grpc.StatusCode.OK, ""
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry later" in (error.details() or ""):
                    time.sleep(0.05)
                    continue
                return error.code(), error.details() or ""
        raise AssertionError("the pipeline stayed busy")

    def post(self, body: bytes, content_type: str | None = PROTOBUF, **headers: str) -> httpx.Response:
        if content_type is not None:
            headers["content-type"] = content_type
        for _ in range(50):
            response = self.http.post(self.url, content=body, headers=headers)
            if response.status_code != 429:
                return response
            time.sleep(0.05)
        raise AssertionError("the pipeline stayed busy")

    def still_serving(self) -> None:
        """A valid request over each protocol is accepted and delivered downstream."""
        self.canary += 1
        trace = (0xCA0000 + self.canary).to_bytes(16, "big")
        assert self.grpc_code(_canary(trace, 1)) == (grpc.StatusCode.OK, "")
        response = self.post(_canary(trace, 2))
        assert response.status_code == 200, response.text
        expected = {(1).to_bytes(8, "big"), (2).to_bytes(8, "big")}
        arrived = lambda: {s.span_id for _, _, s in self.collector.spans() if s.trace_id == trace}  # noqa: E731
        assert wait_until(lambda: arrived() == expected, 20), arrived()

    def close(self) -> None:
        self.http.close()
        self.channel.close()


def _canary(trace_id: bytes, span: int) -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add()
    spans.spans.add(trace_id=trace_id, span_id=span.to_bytes(8, "big"), name=f"canary {span}",
                    start_time_unix_nano=1, end_time_unix_nano=2)
    return request.SerializeToString()


@pytest.fixture
def target(start_enricher, collector, caplog: pytest.LogCaptureFixture) -> Iterator[Target]:
    enricher = start_enricher(max_request_bytes=MAX_REQUEST)
    target = Target(enricher, collector)
    caplog.set_level(logging.WARNING)
    yield target
    target.still_serving()
    target.close()
    # Nothing went wrong inside: no stage logged an error while the fuzz ran.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("enricher")]
    assert not errors, [r.getMessage() for r in errors]


# ---- valid requests, as odd as OTLP allows -----------------------------------------------

ids16 = st.binary(min_size=16, max_size=16)
ids8 = st.binary(min_size=8, max_size=8)
u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=30)


def any_values() -> st.SearchStrategy[AnyValue]:
    leaves = st.one_of(
        text.map(lambda s: AnyValue(string_value=s)),
        st.sampled_from(["{'agent_name': 'fz'}", '{"agent_id": "x"}', "invoke_agent", "chat", "", "\x00",
                         "ab" * 16, "x" * 2000]).map(
            lambda s: AnyValue(string_value=s)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
        st.floats().map(lambda f: AnyValue(double_value=f)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.binary(max_size=16).map(lambda b: AnyValue(bytes_value=b)),
        st.just(AnyValue()),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=2).map(lambda v: AnyValue(array_value=ArrayValue(values=v))),
            st.lists(st.tuples(text, inner), max_size=2).map(
                lambda kv: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kv]))),
        ),
        max_leaves=3,
    )


# Keys the identity rules read, so that odd values reach them too.
_KEYS = ["metadata.agent_id", "metadata.agent_name", "metadata.agent_type", "gen_ai.operation.name",
         "gen_ai.agent.name", "metadata.requester_metadata", "metadata.parent_trace_id", "service.name",
         "openinference.span.kind", "openinference.project.name", "agentmon.announce", "metadata.agent_root",
         "agentmon.project.id", "litellm.metadata.agent_name", "vanna.connection_id", "traceloop.span.kind"]
attributes = st.lists(
    st.builds(KeyValue, key=st.one_of(st.sampled_from(_KEYS), text), value=any_values()), max_size=4)


spans = st.builds(
    Span,
    trace_id=st.one_of(ids16, st.just(b"\x00" * 16)),
    span_id=st.one_of(ids8, st.just(b"\x00" * 8)),
    parent_span_id=st.one_of(st.just(b""), ids8),
    trace_state=text,
    flags=st.integers(0, 2**32 - 1),
    name=st.one_of(text, st.sampled_from(["", "invoke_agent a", "chat", "x" * 3000])),
    kind=st.integers(0, 2**31 - 1),  # proto3 enums are open: unknown kinds are valid
    start_time_unix_nano=u64,
    end_time_unix_nano=u64,
    attributes=attributes,
    dropped_attributes_count=st.integers(0, 2**32 - 1),
    events=st.lists(st.builds(Span.Event, time_unix_nano=u64, name=text, attributes=attributes), max_size=1),
    links=st.lists(st.builds(Span.Link, trace_id=ids16, span_id=ids8, trace_state=text, attributes=attributes,
                             flags=st.integers(0, 2**32 - 1)), max_size=1),
    status=st.builds(Status, message=text, code=st.integers(0, 2**31 - 1)),
)

requests = st.builds(
    ExportTraceServiceRequest,
    resource_spans=st.lists(
        st.builds(
            ResourceSpans,
            resource=st.builds(Resource, attributes=attributes),
            scope_spans=st.lists(
                st.builds(ScopeSpans, scope=st.builds(InstrumentationScope, name=text, version=text,
                                                      attributes=attributes),
                          spans=st.lists(spans, max_size=3), schema_url=text),
                max_size=2),
            schema_url=text,
        ),
        max_size=2,
    ),
)


def valid_payloads() -> st.SearchStrategy[bytes]:
    return requests.map(lambda r: r.SerializeToString()).filter(lambda b: len(b) <= MAX_REQUEST)


# ---- malformed protobuf ------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def nested_trace_id(depth: int, via: str) -> bytes:
    return via[0].encode() * 2 + depth.to_bytes(2, "big") * 7


def arrived_traces(collector: OtlpTestSink) -> set[bytes]:
    return {span.trace_id for _, _, span in collector.spans()}


def nested_payload(depth: int, via: str) -> bytes:
    """A one-span request whose attribute value nests ``depth`` kvlists or arrays, encoded by
    hand (the protobuf runtime itself refuses to build one deeper than it can parse)."""
    value = _field(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        if via == "kvlist":  # AnyValue.kvlist_value { values { key: "k" value: ... } }
            value = _field(6, _field(1, _field(1, b"k") + _field(2, value)))
        else:  # AnyValue.array_value { values: ... }
            value = _field(5, _field(1, value))
    request = ExportTraceServiceRequest.FromString(export_request(trace_id=nested_trace_id(depth, via)))
    span = request.resource_spans[0].scope_spans[0].spans[0].SerializeToString()
    span += _field(9, _field(1, b"deep") + _field(2, value))  # Span.attributes
    return _field(1, _field(2, _field(2, span)))  # request.resource_spans.scope_spans.spans


def _seeds() -> list[bytes]:
    """Fixed valid requests to damage (cheaper than generating a new one every time)."""
    rich = ExportTraceServiceRequest.FromString(export_request(spans=3))
    resource_spans = rich.resource_spans[0]
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    scope_spans = resource_spans.scope_spans[0]
    scope_spans.scope.name = "scope"
    for index, span in enumerate(scope_spans.spans):
        span.parent_span_id = b"\x09" * 8 if index else b""
        span.attributes.add(key="metadata.agent_name", value=AnyValue(string_value=f"agent-{index}"))
        span.attributes.add(key="n", value=AnyValue(int_value=-index))
        span.attributes.add(key="d", value=AnyValue(double_value=0.5))
        span.events.add(name="e", time_unix_nano=5)
        span.links.add(trace_id=b"\x02" * 16, span_id=b"\x03" * 8)
        span.status.code = Status.STATUS_CODE_ERROR
    return [export_request(), export_request(spans=5, payload=40), rich.SerializeToString(), _canary(b"\x04" * 16, 7),
            b""]


_SEEDS = _seeds()


@st.composite
def mutated_payloads(draw) -> bytes:
    """A valid request damaged the ways a broken client or a hostile one would."""
    data = bytearray(draw(st.one_of(st.sampled_from(_SEEDS), valid_payloads())))
    how = draw(st.sampled_from(["truncate", "bitflip", "splice", "wire_type", "huge_length", "bad_tag",
                                "unknown_field", "deep", "group"]))
    if how == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)):]
    elif how == "bitflip" and data:
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif how == "splice":
        at = draw(st.integers(0, len(data)))
        data[at:at + draw(st.integers(0, 8))] = draw(st.binary(max_size=16))
    elif how == "wire_type":
        # resource_spans (field 1) announced with every other wire type, then junk
        data[:0] = bytes([(1 << 3) | draw(st.sampled_from([0, 1, 3, 4, 5, 6, 7]))]) + draw(st.binary(max_size=12))
    elif how == "huge_length":
        length = draw(st.sampled_from([2**31 - 1, 2**31, 2**32 + 5, 2**63 - 1, 2**64 - 1, MAX_REQUEST * 4]))
        data += bytes([(1 << 3) | 2]) + _varint(length) + b"\x00" * draw(st.integers(0, 16))
    elif how == "bad_tag":
        data[:0] = bytes([0x00]) if draw(st.booleans()) else _varint(draw(st.sampled_from([0, 2**29, 2**32])) << 3)
    elif how == "unknown_field":
        # unknown fields of every wire type are valid protobuf: this one stays valid
        field = draw(st.integers(2, 2**29 - 1))
        value = draw(st.sampled_from([_varint(7), b"\x00" * 8, _varint(3) + b"abc", b"\x00" * 4]))
        wire = {1: 0, 8: 1, 4: 5}.get(len(value), 2)
        data += _varint((field << 3) | wire) + value
    elif how == "deep":
        data = bytearray(nested_payload(draw(st.integers(1, 400)), draw(st.sampled_from(["kvlist", "array"]))))
    elif how == "group":
        data[:0] = _varint((1 << 3) | 3) + draw(st.binary(max_size=8)) + _varint((1 << 3) | 4)
    return bytes(data)


def expected_protobuf_verdict(payload: bytes) -> bool:
    """Whether the payload is a valid request (then it must be accepted)."""
    try:
        decode_protobuf(payload)
    except InvalidPayload:
        return False
    return True


def check_grpc(target: Target, payload: bytes) -> None:
    code, details = target.grpc_code(payload)
    if len(payload) > MAX_REQUEST:
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details
    elif expected_protobuf_verdict(payload):
        assert code == grpc.StatusCode.OK, details
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert details.strip(), "an INVALID_ARGUMENT answer must say why"


def check_http_error(response: httpx.Response, status: int, *, as_json: bool) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    if as_json:
        assert response.headers["content-type"].startswith(JSON)
        body = response.json()
        assert body["code"] == INVALID_ARGUMENT and body["message"].strip()
    else:
        assert response.headers["content-type"].startswith(PROTOBUF)
        body = status_pb2.Status.FromString(response.content)
        assert body.code == INVALID_ARGUMENT and body.message.strip()


# ---- gRPC --------------------------------------------------------------------------------


@fuzz(600)
@given(st.binary(max_size=2048))
def test_grpc_random_bytes(target: Target, payload: bytes) -> None:
    check_grpc(target, payload)


@fuzz(700)
@given(mutated_payloads())
def test_grpc_mutated_requests(target: Target, payload: bytes) -> None:
    check_grpc(target, payload)


@fuzz(200)
@given(valid_payloads())
def test_grpc_odd_but_valid_requests_are_accepted(target: Target, payload: bytes) -> None:
    code, details = target.grpc_code(payload)
    assert code == grpc.StatusCode.OK, details


def test_grpc_size_limit_and_deep_nesting(target: Target) -> None:
    # At the limit it is accepted; one byte over, it is a clear RESOURCE_EXHAUSTED.
    base = ExportTraceServiceRequest.FromString(export_request())
    span = base.resource_spans[0].scope_spans[0].spans[0]
    for size in range(MAX_REQUEST - 100, MAX_REQUEST):
        span.name = "x" * size
        if base.ByteSize() == MAX_REQUEST:
            break
    assert base.ByteSize() == MAX_REQUEST
    assert target.grpc_code(base.SerializeToString()) == (grpc.StatusCode.OK, "")
    span.name += "x"
    code, details = target.grpc_code(base.SerializeToString())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details
    # Nesting: accepted as deep as protobuf reads it, then INVALID_ARGUMENT; accepted ones arrive.
    accepted = set()
    for depth in (1, 10, 30, 31, 32, 33, 50, 90, 95, 100, 200, 1000, 5000):
        for via in ("kvlist", "array"):
            payload = nested_payload(depth, via)
            code, details = target.grpc_code(payload)
            if len(payload) > MAX_REQUEST:
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            elif code != grpc.StatusCode.OK:
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.strip(), (depth, via, code, details)
                assert depth >= 30, "a shallow nesting must be accepted"
            else:
                accepted.add(nested_trace_id(depth, via))
    assert wait_until(lambda: accepted <= arrived_traces(target.collector), 15)


# ---- HTTP --------------------------------------------------------------------------------


@fuzz(300)
@given(st.binary(max_size=2048))
def test_http_random_protobuf_bodies(target: Target, payload: bytes) -> None:
    response = target.post(payload)
    if expected_protobuf_verdict(payload):
        assert response.status_code == 200 and response.content == b""
    else:
        check_http_error(response, 400, as_json=False)


@fuzz(400)
@given(mutated_payloads())
def test_http_mutated_protobuf_bodies(target: Target, payload: bytes) -> None:
    response = target.post(payload)
    if len(payload) > MAX_REQUEST:
        check_http_error(response, 413, as_json=False)
    elif expected_protobuf_verdict(payload):
        assert response.status_code == 200, response.content
    else:
        check_http_error(response, 400, as_json=False)


def to_otlp_json(request: ExportTraceServiceRequest) -> dict:
    """OTLP/JSON as SDKs write it: camelCase, hex ids, int64s as strings."""
    document = json_format.MessageToDict(request)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for owner in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in owner:
                            owner[key] = base64.b64decode(owner[key]).hex()
    return document


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
    max_leaves=8,
)
bad_hex = st.one_of(
    st.sampled_from(["zz", "0x" + "ab" * 15, "ab" * 15 + "a", "AB" * 17, "٠١" * 8, "ab cd", "ab" * 8 + "\n",
                     "g" * 32, "\u0000" * 32, "ab" * 1000, "-1", "0" * 31, "ＡＢ" * 8]),
    st.text(max_size=40),
    st.integers(), st.lists(st.integers(0, 255), max_size=16), st.booleans(), st.just({}),
)


def _paths(value, prefix=()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _set(document, path: tuple, value):
    if not path:
        return value
    node = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return document


@st.composite
def json_bodies(draw) -> tuple[bytes, bool]:
    """(an OTLP/JSON body, whether it must be accepted): valid ones, ones with a random part
    replaced (wrong types, bad hex ids, unknown fields), and text that is not JSON."""
    request = draw(requests)
    document = to_otlp_json(request)
    how = draw(st.sampled_from(["valid", "valid_snake", "replace", "bad_id", "not_json", "not_object", "deep"]))
    if how == "valid":
        return json.dumps(document).encode(), True
    if how == "valid_snake":  # field names as in the .proto are valid protobuf JSON too
        snake = json_format.MessageToDict(request, preserving_proto_field_name=True)
        for resource_spans in snake.get("resource_spans", []):
            for scope_spans in resource_spans.get("scope_spans", []):
                for span in scope_spans.get("spans", []):
                    for owner in [span, *span.get("links", [])]:
                        for key in ("trace_id", "span_id", "parent_span_id"):
                            if key in owner:
                                owner[key] = base64.b64decode(owner[key]).hex().upper()
        return json.dumps(snake).encode(), True
    if how == "replace":
        path = draw(st.sampled_from(_paths(document)))
        document = _set(document, path, draw(json_values))
    elif how == "bad_id":
        span_paths = [p for p in _paths(document) if p and p[-1] in ("traceId", "spanId", "parentSpanId")]
        assume(span_paths)
        document = _set(document, draw(st.sampled_from(span_paths)), draw(bad_hex))
    elif how == "not_json":
        document = draw(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                                  st.just(json.dumps(document)[:-1].encode())))
    elif how == "not_object":
        document = draw(st.one_of(st.lists(json_values, max_size=3), st.integers(), st.text()))
    elif how == "deep":
        depth = draw(st.integers(1, 3000))
        document = b'{"resourceSpans": ' + b"[" * depth + b"]" * depth + b"}"
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    try:  # the decoder's own verdict; the test checks that the server acts on it
        decode_json(body)
        return body, True
    except InvalidPayload:
        return body, False


@fuzz(500)
@given(json_bodies(), st.sampled_from([JSON, "application/json; charset=utf-8", "Application/JSON"]))
def test_http_json_bodies(target: Target, body: tuple[bytes, bool], content_type: str) -> None:
    payload, valid = body
    response = target.post(payload, content_type)
    note(f"body: {payload[:500]!r}")
    if len(payload) > MAX_REQUEST:
        check_http_error(response, 413, as_json=True)
    elif valid:
        assert response.status_code == 200 and response.json() == {}, response.text
    else:
        check_http_error(response, 400, as_json=True)


@fuzz(150)
@given(st.one_of(st.none(), st.text(max_size=40), st.sampled_from(
    ["application/protobuf", "application/x-protobuf2", "text/plain", "application/grpc", "multipart/form-data",
     "application/x-www-form-urlencoded", "application/jsonx", "json", "*/*", ";", "application/x-protobuf,json"])))
def test_http_other_content_types_are_415(target: Target, content_type: str | None) -> None:
    normalised = (content_type or "").split(";")[0].strip().lower()
    assume(normalised not in (PROTOBUF, JSON))
    # what an HTTP client can send at all: printable ASCII without surrounding blanks
    assume(content_type is None or (content_type.isascii() and content_type.isprintable()
                                    and content_type == content_type.strip()))
    response = target.post(export_request(), content_type)
    check_http_error(response, 415, as_json=True)


@st.composite
def encoded_bodies(draw) -> tuple[bytes, str, int]:
    """(body, content-encoding, expected status) for compressed and badly compressed bodies."""
    valid = export_request(spans=2)
    how = draw(st.sampled_from(["gzip", "deflate", "bomb", "bad_gzip", "truncated", "wrong_encoding", "unknown",
                                "gzip_of_garbage", "flipped"]))
    if how == "gzip":
        return gzip.compress(valid), draw(st.sampled_from(["gzip", "GZIP", "Gzip"])), 200
    if how == "deflate":
        return zlib.compress(valid), "deflate", 200
    if how == "bomb":
        size = draw(st.integers(MAX_REQUEST + 1, 8 * 1024 * 1024))
        if draw(st.booleans()):
            return zlib.compress(b"\x00" * size, 1), "deflate", 413
        return gzip.compress(b"\x00" * size, compresslevel=1), "gzip", 413
    if how == "bad_gzip":
        return draw(st.binary(max_size=300)), draw(st.sampled_from(["gzip", "deflate"])), 400
    if how == "truncated":
        packed = gzip.compress(valid)
        return packed[: draw(st.integers(0, len(packed) - 1))], "gzip", 400
    if how == "wrong_encoding":
        return zlib.compress(valid), "gzip", 200  # a zlib header is auto-detected under gzip: fine
    if how == "unknown":
        return valid, draw(st.sampled_from(["br", "zstd", "compress", "x-gzip", "gzip, gzip", "identity, gzip"])), 400
    if how == "gzip_of_garbage":  # well compressed, but not a request (or, by chance, one)
        garbage = draw(st.binary(min_size=1, max_size=200))
        return gzip.compress(garbage), "gzip", 200 if expected_protobuf_verdict(garbage) else 400
    packed = bytearray(gzip.compress(valid))
    packed[draw(st.integers(10, len(packed) - 9))] ^= 1 << draw(st.integers(0, 7))  # CRC catches it, or decode does
    return bytes(packed), "gzip", -1


@fuzz(200)
@given(encoded_bodies())
def test_http_compression(target: Target, case: tuple[bytes, str, int]) -> None:
    body, encoding, status = case
    note(f"{encoding=} {status=} body={body[:300]!r}")
    response = target.post(body, PROTOBUF, **{"content-encoding": encoding})
    if status == -1:  # a flipped bit: any clear answer but a crash
        assert response.status_code in (200, 400), response.status_code
        if response.status_code == 400:
            check_http_error(response, 400, as_json=False)
    elif status == 200:
        assert response.status_code == 200, response.content
    else:
        check_http_error(response, status, as_json=False)


def test_http_chunked_and_lying_lengths(target: Target) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 4096):
            yield b"\x00" * 4096

    # No content-length: the limit is applied while reading.
    response = target.http.post(target.url, content=chunks(MAX_REQUEST + 8192), headers={"content-type": PROTOBUF})
    check_http_error(response, 413, as_json=False)
    # A declared length over the limit is refused before the body is read (no hang).
    with socket.create_connection(("127.0.0.1", target.enricher.http_port), timeout=10) as raw:
        raw.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000000000000\r\n\r\n{")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == INVALID_ARGUMENT
    response = target.post(b"\x00" * (MAX_REQUEST + 1))
    check_http_error(response, 413, as_json=False)
    response = target.post(json.dumps({"resourceSpans": [], "pad": "x" * MAX_REQUEST}).encode(), JSON)
    check_http_error(response, 413, as_json=True)


def test_http_json_deep_nesting_in_attribute_values(target: Target) -> None:
    accepted = set()
    for depth in (1, 10, 30, 50, 90, 100, 150, 200):
        for via in ("kvlist", "array"):
            try:
                document = to_otlp_json(ExportTraceServiceRequest.FromString(nested_payload(depth, via)))
            except Exception:  # deeper than protobuf reads: write the JSON by hand
                document = to_otlp_json(ExportTraceServiceRequest.FromString(
                    export_request(trace_id=nested_trace_id(depth, via))))
                value: dict = {"stringValue": "leaf"}
                for _ in range(depth):
                    value = ({"kvlistValue": {"values": [{"key": "k", "value": value}]}} if via == "kvlist"
                             else {"arrayValue": {"values": [value]}})
                document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [
                    {"key": "deep", "value": value}]
            response = target.post(json.dumps(document).encode(), JSON)
            if response.status_code == 200:
                accepted.add(nested_trace_id(depth, via))
            else:
                check_http_error(response, 400, as_json=True)
                assert depth >= 30, "a shallow nesting must be accepted"
    assert wait_until(lambda: accepted <= arrived_traces(target.collector), 15)


def test_http_other_methods_and_paths_do_not_crash(target: Target) -> None:
    base = target.url.removesuffix("/v1/traces")
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        assert target.http.request(method, target.url).status_code == 405
    assert target.http.post(f"{base}/v1/logs", content=b"").status_code == 404
    assert target.http.post(f"{base}/v1/traces/", content=b"").status_code in (307, 404, 405)


def test_http_multi_member_gzip_is_read_whole(target: Target) -> None:
    """RFC 1952 allows several gzip members in one body (what `cat a.gz b.gz` makes, and what
    Go's gzip reader, the collector's, reads whole). Two serialized requests concatenated are
    one valid request holding both: every span must be taken, none silently dropped."""
    first = _canary(b"\x0b" * 16, 1)
    second = _canary(b"\x0b" * 16, 2)
    response = target.post(gzip.compress(first) + gzip.compress(second), PROTOBUF, **{"content-encoding": "gzip"})
    assert response.status_code == 200, response.content
    expected = {(1).to_bytes(8, "big"), (2).to_bytes(8, "big")}
    arrived = lambda: {s.span_id for _, _, s in target.collector.spans() if s.trace_id == b"\x0b" * 16}  # noqa: E731
    assert wait_until(lambda: arrived() == expected, 10), arrived()


def test_http_trailing_garbage_after_gzip_is_refused(target: Target) -> None:
    response = target.post(gzip.compress(_canary(b"\x0c" * 16, 1)) + b"garbage", PROTOBUF,
                           **{"content-encoding": "gzip"})
    check_http_error(response, 400, as_json=False)


def test_http_gzip_members_are_bounded(target: Target) -> None:
    # Many tiny members cost little and get a clear refusal past the cap.
    one = gzip.compress(b"")
    response = target.post(one * 2000, PROTOBUF, **{"content-encoding": "gzip"})
    check_http_error(response, 400, as_json=False)
    assert "members" in status_pb2.Status.FromString(response.content).message
    assert target.post(one * 100, PROTOBUF, **{"content-encoding": "gzip"}).status_code == 200  # empty request
    # A bomb split over members is still bounded by the limit on the whole.
    half = gzip.compress(b"\x00" * (MAX_REQUEST // 2 + 1))
    check_http_error(target.post(half + half, PROTOBUF, **{"content-encoding": "gzip"}), 413, as_json=False)
    # deflate (zlib) streams have one member only
    packed = zlib.compress(_canary(b"\x0d" * 16, 1))
    check_http_error(target.post(packed + packed, PROTOBUF, **{"content-encoding": "deflate"}), 400, as_json=False)


def _with_link(trace_id: bytes, span_id: bytes) -> bytes:
    request = ExportTraceServiceRequest.FromString(_canary(b"\x0e" * 16, len(trace_id) * 100 + len(span_id) + 1))
    request.resource_spans[0].scope_spans[0].spans[0].links.add(trace_id=trace_id, span_id=span_id)
    return request.SerializeToString()


@pytest.mark.parametrize("trace_id,span_id", [(b"\x01" * 3, b"\x02" * 8), (b"\x01" * 16, b"\x02" * 9),
                                              (b"\x01" * 17, b""), (b"", b"\x02")])
def test_links_with_bad_id_lengths_are_refused_not_lost_downstream(target: Target, trace_id: bytes,
                                                                   span_id: bytes) -> None:
    """The collector's pdata refuses any trace/span id of the wrong length, links' included, so
    the whole request would be rejected downstream after the enricher acknowledged it."""
    code, details = target.grpc_code(_with_link(trace_id, span_id))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "link" in details
    document = to_otlp_json(ExportTraceServiceRequest.FromString(_canary(b"\x0e" * 16, 1)))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["links"] = [
        {"traceId": trace_id.hex(), "spanId": span_id.hex()}]
    check_http_error(target.post(json.dumps(document).encode(), JSON), 400, as_json=True)


def test_links_with_empty_or_full_ids_are_accepted(target: Target) -> None:
    assert target.grpc_code(_with_link(b"", b"")) == (grpc.StatusCode.OK, "")
    assert target.grpc_code(_with_link(b"\x01" * 16, b"\x02" * 8)) == (grpc.StatusCode.OK, "")
