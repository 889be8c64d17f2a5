"""The pipeline gives the same results whichever way its requests were scanned.

Normally a request is scanned in C (enricher/receive/_wirescan.c): one pass validates it and
gives each span's ids and position and its attribute-key hits. Requests that the C pass
declines (odd encodings) take the Python path: upb decodes them and the same scan is built
from the decoded request. These tests run two pipelines side by side on the same random
requests, one whose scanner never uses C, and require the same result from both: every
delivered request equal once decoded, the same spans held, released and dropped, the same
counters and the same journal bookkeeping. The requests include odd but valid encodings
(unknown fields, repeated and split messages, non-minimal varints, duplicate attributes).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from enricher import wire
from enricher.agents import AgentDirectory
from enricher.attribute import TraceAttributor
from enricher.identify.rules import load_rules
from enricher.journal import Journal
from enricher.metrics import EnricherMetrics
from enricher.enrichment import RUN_ANNOUNCE_KEY, Enrichment, scanner_for
from enricher.pipeline import Overloaded, Pipeline
from enricher.receive import scan
from enricher.receive.decode import InvalidPayload, decode_protobuf
from registry_api.store import AgentIdentity, AgentStore, create_registry_engine
from registry_api.store.migrate import upgrade_registry

# The C scanner is built by `pip install -e .` where a C compiler is: required in CI (the
# tests fail there without it), skipped elsewhere (the enricher then runs on the Python path).
pytestmark = pytest.mark.skipif(
    scan._wirescan is None and not os.environ.get("CI"), reason="the C request scanner is not built (no C compiler?)"
)

TRACES = [bytes([n]) * 16 for n in (1, 2, 3)]
SPAN_IDS = [bytes([n]) * 8 for n in range(1, 9)]
QUIET = AgentIdentity(name="quiet-bot")  # registered with monitoring off: its spans are dropped
LOUD = AgentIdentity(name="loud-bot", type="vanna", external_id="conn-1")


# ---- building requests, sometimes oddly encoded ------------------------------------------


def _varint(value: int, extra: int = 0) -> bytes:
    """``value`` as a varint, with ``extra`` redundant bytes (valid, never minimal)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    if not extra:
        return bytes(out + bytes((value,)))
    # The last byte gets a continuation bit, then zero groups follow: 17 -> 0x91 0x00.
    return bytes(out + bytes((value | 0x80,)) + b"\x80" * (extra - 1) + b"\x00")


def _field(number: int, body: bytes, odd: int = 0) -> bytes:
    """A length-delimited field; ``odd`` 1 makes its tag non-minimal, 2 its length."""
    return _varint((number << 3) | 2, 1 if odd == 1 else 0) + _varint(len(body), 1 if odd == 2 else 0) + body


UNKNOWN_FIELDS = [
    b"\xb8\x06\x2a",  # field 103, varint
    b"\xc1\x06" + bytes(8),  # field 104, fixed64
    b"\xcd\x06" + bytes(4),  # field 105, fixed32
    b"\xd2\x06\x03abc",  # field 106, length-delimited
]

ids = st.sampled_from(SPAN_IDS)
names = st.sampled_from(["planner", "writer", "quiet-bot", "loud-bot", ""])
texts = st.sampled_from(["x", "run", "openai", "autogen", "invoke_agent", "chat"])
ATTRIBUTE = st.one_of(
    st.tuples(st.just("gen_ai.operation.name"), st.sampled_from(["invoke_agent", "chat", "create_agent"])),
    st.tuples(st.just("gen_ai.agent.name"), names),
    st.tuples(st.just("gen_ai.system"), st.sampled_from(["openai", "autogen"])),
    st.tuples(st.just("metadata.agent_id"), st.sampled_from([QUIET.agent_id, LOUD.agent_id, str(uuid.UUID(int=7))])),
    st.tuples(st.just("metadata.agent_name"), names),
    st.tuples(st.just("metadata.agent_type"), st.sampled_from(["custom", "vanna", "nonsense"])),
    st.tuples(st.just(RUN_ANNOUNCE_KEY), st.just("run")),
    st.tuples(st.just("metadata.parent_trace_id"), st.sampled_from([t.hex() for t in TRACES] + ["junk"])),
    st.tuples(st.just("metadata.requester_metadata"), st.sampled_from(["{'agent_name': 'writer'}", "{}"])),
    st.tuples(st.just("vanna.connection_id"), st.sampled_from(["conn-1", "conn-2"])),
    st.tuples(st.just("openinference.span.kind"), st.sampled_from(["AGENT", "LLM"])),
    st.tuples(st.sampled_from(["http.method", "db.statement", "gen_ai.request.model"]), texts),
)


@st.composite
def attribute_bytes(draw) -> bytes:
    """One serialized KeyValue (a Span.attributes element), sometimes oddly encoded."""
    key, text = draw(ATTRIBUTE)
    kind = draw(st.sampled_from(["string", "string", "int", "bool", "array"]))
    if kind == "int":
        value = AnyValue(int_value=len(text))
    elif kind == "bool":
        value = AnyValue(bool_value=bool(text))
    elif kind == "array":
        value = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=text)]))
    else:
        value = AnyValue(string_value=text)
    odd = draw(st.sampled_from([0, 0, 0, 1, 2]))  # non-minimal key tag or key length
    return _field(1, key.encode(), odd) + _field(2, value.SerializeToString())


@st.composite
def span_bytes(draw) -> bytes:
    trace_id = draw(st.sampled_from(TRACES))
    span = Span(
        trace_id=trace_id,
        span_id=draw(ids),
        parent_span_id=draw(st.one_of(st.just(b""), ids)),
        name=draw(st.sampled_from(["chat", "invoke_agent planner", "Flowise", "GET /"])),
        start_time_unix_nano=1,
    )
    for _ in range(draw(st.integers(0, 2))):
        link = span.links.add(trace_id=draw(st.sampled_from(TRACES + [b""])))
        link.span_id = draw(st.sampled_from(SPAN_IDS + [b""]))
    out = span.SerializeToString()
    for attribute in draw(st.lists(attribute_bytes(), max_size=4)):
        # Attributes are a repeated field: they may come anywhere in the span, repeated keys too.
        piece = _field(9, attribute, draw(st.sampled_from([0, 0, 0, 1, 2])))
        out = piece + out if draw(st.booleans()) else out + piece
    if draw(st.integers(0, 5)) == 0:
        out += draw(st.sampled_from(UNKNOWN_FIELDS))
    return out


RESOURCE_ATTRIBUTES = st.lists(
    st.sampled_from([
        ("service.name", "app"),
        ("agentmon.agent.name", "resource-bot"),
        ("openinference.project.name", "flow-a"),
        ("telemetry.sdk.language", "nodejs"),
    ]),
    max_size=3,
    unique=True,
)


@st.composite
def scope_spans_bytes(draw) -> bytes:
    fields = [_field(2, span, draw(st.sampled_from([0, 0, 0, 1, 2]))) for span in draw(st.lists(span_bytes(), max_size=5))]
    scope = InstrumentationScope(name=draw(st.sampled_from(["app", "langflow", "arize-tracer-1"])))
    fields.insert(draw(st.integers(0, len(fields))), _field(1, scope.SerializeToString()))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), _field(3, b"https://schema/1"))
    if draw(st.integers(0, 3)) == 0:
        fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(UNKNOWN_FIELDS)))
    return b"".join(fields)


@st.composite
def resource_spans_bytes(draw) -> bytes:
    attributes = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in draw(RESOURCE_ATTRIBUTES)]
    # A message field given twice is merged: split the resource's attributes over two.
    split = draw(st.integers(0, len(attributes)))
    resources = [_field(1, Resource(attributes=attributes[:split]).SerializeToString())]
    if split < len(attributes) or draw(st.booleans()):
        resources.append(_field(1, Resource(attributes=attributes[split:]).SerializeToString()))
    fields = [_field(2, scope, draw(st.sampled_from([0, 0, 1, 2]))) for scope in draw(st.lists(scope_spans_bytes(), max_size=2))]
    for resource in resources:
        fields.insert(draw(st.integers(0, len(fields))), resource)
    if draw(st.integers(0, 3)) == 0:
        fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(UNKNOWN_FIELDS)))
    return b"".join(fields)


@st.composite
def requests(draw) -> bytes:
    fields = [_field(1, rs, draw(st.sampled_from([0, 0, 0, 1, 2]))) for rs in draw(st.lists(resource_spans_bytes(), min_size=1, max_size=2))]
    if draw(st.integers(0, 3)) == 0:
        fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(UNKNOWN_FIELDS)))
    return b"".join(fields)


# ---- two pipelines -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CaptureSink:
    name = "capture"

    def __init__(self) -> None:
        self.batches: list[tuple[bytes, int]] = []

    def submit(self, batch, timeout=None) -> bool:
        decoded = ExportTraceServiceRequest.FromString(batch.payload)
        self.batches.append((decoded.SerializeToString(deterministic=True), batch.span_count))
        batch.on_done(True)
        return True

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> None:
        pass


class Twin:
    """A pipeline with its own state; ``native`` False makes its scanner take the Python path
    (upb) for every request."""

    def __init__(self, store: AgentStore, directory: Path, *, native: bool) -> None:
        self.clock = Clock()
        self.metrics = EnricherMetrics()
        self.directory = AgentDirectory(store, self.metrics)
        self.directory.refresh()
        self.attributor = TraceAttributor(self.metrics, hold_seconds=5.0, clock=self.clock)
        self.sink = CaptureSink()
        rules = load_rules()
        self.enrichment = Enrichment(
            rules=rules, directory=self.directory, attributor=self.attributor, metrics=self.metrics,
            scanner=scanner_for(rules, native=native),
        )
        self.pipeline = Pipeline(
            self.enrichment, scanner=self.enrichment.scanner, sinks=[self.sink],
            journal=Journal(directory, max_bytes=1 << 30), metrics=self.metrics,
        )
        self.enrichment.start(self.pipeline)
        assert self.pipeline.scanner.native == native

    def close(self) -> None:
        self.pipeline._journal.close()

    def feed(self, seq: int, payload: bytes) -> None:
        """As the receivers and the journal replay give a request."""
        self.enrichment.process(seq, self.pipeline.scanner.scan(payload))

    def tick(self, seconds: float) -> None:
        self.clock.now += seconds
        self.enrichment.expire()

    def state(self) -> dict:
        counters = {
            sample.name + repr(sorted(sample.labels.items())): sample.value
            for family in self.metrics.registry.collect()
            for sample in family.samples
            if not sample.name.endswith("_created")
        }
        return {
            "delivered": list(self.sink.batches),
            "counters": counters,
            "held": self.attributor.held_count,
            "outstanding": dict(self.pipeline._outstanding),
            "last_processed": self.pipeline._last_processed,
        }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> AgentStore:
    url = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'registry.db'}"
    upgrade_registry(url)
    store = AgentStore(create_registry_engine(url))
    quiet, _ = store.resolve_or_create(QUIET)
    store.update(quiet.id, {"monitoring_enabled": False})
    store.resolve_or_create(LOUD)
    yield store
    store.engine.dispose()


def _valid(payload: bytes) -> bool:
    try:
        decode_protobuf(payload)
    except InvalidPayload:
        return False
    return True


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(requests(), st.sampled_from([0.0, 0.0, 1.0, 6.0])), min_size=1, max_size=3))
def test_the_c_scan_and_the_python_scan_give_the_same_pipeline_results(store, tmp_path_factory, caplog, steps) -> None:
    payloads = [(payload, pause) for payload, pause in steps if _valid(payload)]
    if not payloads:
        return
    base = tmp_path_factory.mktemp("journals")
    fast = Twin(store, base / "fast", native=True)
    slow = Twin(store, base / "slow", native=False)
    caplog.set_level(logging.WARNING, logger="enricher")
    for seq, (payload, pause) in enumerate(payloads, start=1):
        fast.feed(seq, payload)
        slow.feed(seq, payload)
        for twin in (fast, slow):
            twin.tick(pause)
        assert fast.state() == slow.state()
    for twin in (fast, slow):
        twin.tick(60.0)  # every hold expires
        twin.enrichment.release_all()
        twin.close()
    assert fast.state() == slow.state()
    assert fast.state()["held"] == 0
    # Neither path failed on a span or fell back to forwarding a request as received.
    assert not [r for r in caplog.records if r.name in ("enricher.pipeline", "enricher.enrichment")]


def test_the_c_scan_takes_odd_but_common_encodings(store, tmp_path) -> None:
    """Unknown fields and non-minimal varints stay on the C path (the comparison above would
    otherwise compare the Python path with itself); what it declines still gets through."""
    span = Span(trace_id=TRACES[0], span_id=SPAN_IDS[0], name="chat", attributes=[
        KeyValue(key="gen_ai.agent.name", value=AnyValue(string_value="planner"))]).SerializeToString()
    plain = _field(1, _field(2, _field(2, span)))
    odd = _field(1, _field(2, _field(2, span + UNKNOWN_FIELDS[3], odd=2), odd=1) + UNKNOWN_FIELDS[0]) + UNKNOWN_FIELDS[1]
    twin = Twin(store, tmp_path / "journal", native=True)
    for seq, payload in enumerate((plain, odd), start=1):
        twin.feed(seq, payload)
    assert twin.pipeline.scanner.declined == 0
    delivered = [ExportTraceServiceRequest.FromString(payload) for payload, _ in twin.sink.batches]
    assert [s.name for r in delivered for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans] == ["chat"] * 2


def test_odd_outer_shapes_take_the_python_path(store, tmp_path) -> None:
    """A group-encoded unknown field is valid protobuf that neither walk follows: the request
    is taken as upb decodes it, without that field."""
    span = Span(trace_id=TRACES[0], span_id=SPAN_IDS[0], name="chat").SerializeToString()
    payload = _field(1, _field(2, _field(2, span))) + b"\xbb\x06\xbc\x06"  # field 103: start and end group
    assert _valid(payload)
    with pytest.raises(wire.WireError):
        wire.layout(payload)
    twin = Twin(store, tmp_path / "journal", native=True)
    twin.feed(1, payload)
    assert twin.pipeline.scanner.declined == 1
    delivered = [ExportTraceServiceRequest.FromString(payload) for payload, _ in twin.sink.batches]
    assert [s.name for r in delivered for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans] == ["chat"]


def test_a_request_with_nothing_to_change_is_forwarded_as_received(store, tmp_path) -> None:
    twin = Twin(store, tmp_path / "journal", native=True)
    sent: list[bytes] = []
    twin.pipeline.deliver = lambda payload, count, parts: sent.append(payload)
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    scope.spans.add(trace_id=TRACES[0], span_id=SPAN_IDS[0], name="GET /")
    payload = request.SerializeToString() + UNKNOWN_FIELDS[0]
    twin.feed(1, payload)
    assert sent == [payload]  # the very bytes received: nothing decoded, nothing re-encoded


def test_huge_names_and_values_are_not_remembered(store, tmp_path) -> None:
    """Remembered rule answers are keyed by span text: a client sending huge names must not be
    able to grow the caches (their entry counts are bounded, their keys' sizes must be too)."""
    twin = Twin(store, tmp_path / "journal", native=True)
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(8):
        scope.spans.add(trace_id=TRACES[0], span_id=SPAN_IDS[n], name="x" * 65536 + str(n), attributes=[
            KeyValue(key="gen_ai.agent.name", value=AnyValue(string_value="y" * 65536 + str(n)))])
    twin.feed(1, request.SerializeToString())
    assert twin.pipeline.scanner.declined == 0
    assert twin.enrichment._outcomes == {}
    remembered = [key for filter_ in twin.enrichment._rules._scope_filters.values() for key in filter_.answers]
    assert all(len(repr(key)) < 4096 for key in remembered)
    # The spans were still identified: each names its own agent.
    assert len(twin.sink.batches) == 1


def test_waiting_requests_are_bounded_by_their_spans_too(store, tmp_path) -> None:
    """Requests wait for the worker scanned (a few hundred bytes a span besides the payload), so
    besides the count of waiting requests their spans are bounded: beyond, clients are pushed back."""
    twin = Twin(store, tmp_path / "journal", native=True)
    pipeline = twin.pipeline
    pipeline._max_waiting_spans = 10

    def scanned(count: int):
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        for n in range(count):
            scope.spans.add(trace_id=TRACES[0], span_id=bytes([n + 1]) * 8, name="GET /")
        return pipeline.scanner.scan(request.SerializeToString())

    pipeline.submit(scanned(20))  # alone, a request over the budget is taken
    with pytest.raises(Overloaded, match="spans"):
        pipeline.submit(scanned(1))
    pipeline._drain_queue()  # the worker takes what waits
    pipeline.submit(scanned(6))
    with pytest.raises(Overloaded, match="spans"):
        pipeline.submit(scanned(6))
    pipeline.submit(scanned(4))
    pipeline._drain_queue()
    assert pipeline._waiting_spans == 0
    assert sum(count for _, count in twin.sink.batches) == 30
    twin.close()
