"""Run announcements (spans with agentmon.announce): the pipeline learns a run's agent from
them, so the run's LLM calls are stamped at once, and never forwards them."""

from __future__ import annotations

import time

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from enricher.enrichment import RUN_ANNOUNCE_KEY
from registry_api.store import AgentIdentity
from tests.enricher.conftest import stamped, wait_until
from tests.support.otlp_sink import any_value

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
RUN = bytes.fromhex("b7ad6b7169203331")
AGENT = AgentIdentity(name="announced-bot")
IDENTITY = {"metadata.agent_id": AGENT.agent_id, "metadata.agent_name": AGENT.name, "metadata.agent_type": "custom"}


def _span(name: str, span_id: bytes, parent: bytes = b"", trace_id: bytes = TRACE, **attributes) -> Span:
    return Span(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name,
        start_time_unix_nano=time.time_ns(), end_time_unix_nano=time.time_ns(),
        attributes=[KeyValue(key=k, value=AnyValue(string_value=str(v))) for k, v in attributes.items()],
    )


def _announcement(span_id: bytes = RUN, trace_id: bytes = TRACE, identity: dict | None = None) -> Span:
    attributes = {**(IDENTITY if identity is None else identity), RUN_ANNOUNCE_KEY: "run"}
    return _span(f"invoke_agent {AGENT.name}", span_id, trace_id=trace_id, **attributes)


def _llm(span_id: bytes, parent: bytes = RUN, trace_id: bytes = TRACE) -> Span:
    return _span("chat gpt-4o-mini", span_id, parent, trace_id=trace_id,
                 **{"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"})


def _run(trace_id: bytes = TRACE) -> Span:
    return _span(f"invoke_agent {AGENT.name}", RUN, trace_id=trace_id,
                 **{**IDENTITY, "gen_ai.operation.name": "invoke_agent"})


def _send(enricher, *spans: Span) -> None:
    resource_spans = ResourceSpans()
    resource_spans.scope_spans.add().spans.extend(spans)
    payload = ExportTraceServiceRequest(resource_spans=[resource_spans]).SerializeToString()
    with grpc.insecure_channel(f"127.0.0.1:{enricher.grpc_port}") as channel:
        channel.unary_unary(EXPORT)(payload, timeout=10)


def _attributes(span: Span) -> dict:
    return {kv.key: any_value(kv.value) for kv in span.attributes}


def _announce_count(enricher) -> float:
    return enricher.metrics.run_announcements._value.get()


def test_an_announced_runs_llm_calls_are_stamped_at_once_and_the_announcement_is_never_forwarded(
    start_enricher, collector
) -> None:
    enricher = start_enricher(hold_seconds=1.0)
    _send(enricher, _announcement())
    sent_at = time.monotonic()
    _send(enricher, _llm(b"\x00\x00\x00\x00\x00\x00\x00\x01"))
    assert collector.wait_for_spans(1, 5)
    # Stamped well inside the hold: it was not held waiting for the run's span.
    assert time.monotonic() - sent_at < 0.9
    assert stamped(collector)["chat gpt-4o-mini"] == IDENTITY

    time.sleep(1.3)  # longer than the hold: the run's own span comes much later, as at a real run's end
    _send(enricher, _run())
    assert collector.wait_for_spans(2, 5)
    time.sleep(0.3)
    spans = {span.name: span for _, _, span in collector.spans()}
    assert collector.span_count() == 2, "the announcement must not be forwarded"
    assert all(RUN_ANNOUNCE_KEY not in _attributes(span) for span in spans.values())
    run = _attributes(spans[f"invoke_agent {AGENT.name}"])
    assert run["metadata.agent_id"] == AGENT.agent_id and run["metadata.agent_root"] == "true"
    assert "metadata.agent_root" not in _attributes(spans["chat gpt-4o-mini"])
    assert _announce_count(enricher) == 1
    assert enricher.metrics.spans_received._value.get() == 2
    assert enricher.metrics.spans_released_on_timeout._value.get() == 0
    assert wait_until(lambda: enricher.journal.pending_records == 0, 5)


def test_without_an_announcement_the_same_call_waits_and_leaves_unstamped(start_enricher, collector) -> None:
    """The control: what the announcement saves a run from."""
    enricher = start_enricher(hold_seconds=1.0)
    sent_at = time.monotonic()
    _send(enricher, _llm(b"\x00\x00\x00\x00\x00\x00\x00\x01"))
    assert collector.wait_for_spans(1, 5)
    assert time.monotonic() - sent_at >= 0.9  # held for the whole hold
    assert stamped(collector)["chat gpt-4o-mini"] == {}
    assert enricher.metrics.spans_released_on_timeout._value.get() == 1


def test_an_announcement_alone_is_committed_at_once_and_forwards_nothing(start_enricher, collector) -> None:
    enricher = start_enricher(hold_seconds=5.0)
    _send(enricher, _announcement())
    assert wait_until(lambda: _announce_count(enricher) == 1, 5)
    assert wait_until(lambda: enricher.journal.pending_records == 0, 5)
    # A later span of another trace arrives; the announcement, processed before it, never does.
    _send(enricher, _span("other", b"\x00\x00\x00\x00\x00\x00\x00\x09", trace_id=b"\x05" * 16))
    assert collector.wait_for_spans(1, 5)
    time.sleep(0.3)
    assert [span.name for _, _, span in collector.spans()] == ["other"]
    assert enricher.metrics.spans_held._value.get() == 0


def test_an_announcement_in_a_request_with_other_spans_is_removed_from_it(start_enricher, collector) -> None:
    enricher = start_enricher(hold_seconds=5.0)
    other = _span("unrelated", b"\x00\x00\x00\x00\x00\x00\x00\x07", trace_id=b"\x06" * 16)
    _send(enricher, _announcement(), _llm(b"\x00\x00\x00\x00\x00\x00\x00\x02"), other)
    assert collector.wait_for_spans(2, 5)
    time.sleep(0.3)
    assert sorted(span.name for _, _, span in collector.spans()) == ["chat gpt-4o-mini", "unrelated"]
    assert stamped(collector)["chat gpt-4o-mini"] == IDENTITY
    assert wait_until(lambda: enricher.journal.pending_records == 0, 5)


def test_an_announcement_naming_no_agent_is_dropped_too(start_enricher, collector) -> None:
    enricher = start_enricher(hold_seconds=1.0)
    _send(enricher, _announcement(identity={}), _span("plain", b"\x00\x00\x00\x00\x00\x00\x00\x03",
                                                         trace_id=b"\x07" * 16))
    assert collector.wait_for_spans(1, 5)
    time.sleep(0.3)
    assert [span.name for _, _, span in collector.spans()] == ["plain"]
    assert _announce_count(enricher) == 1
    assert wait_until(lambda: enricher.journal.pending_records == 0, 5)


def test_a_request_that_cannot_be_enriched_is_forwarded_without_its_announcement(start_enricher, collector) -> None:
    enricher = start_enricher()
    attributor = enricher.attributor

    def broken(records):
        raise RuntimeError("injected fault")

    attributor.process = broken
    _send(enricher, _announcement(), _llm(b"\x00\x00\x00\x00\x00\x00\x00\x04"), _run())
    assert collector.wait_for_spans(2, 5)
    time.sleep(0.3)
    assert sorted(span.name for _, _, span in collector.spans()) == ["chat gpt-4o-mini", f"invoke_agent {AGENT.name}"]
    assert all(RUN_ANNOUNCE_KEY not in _attributes(span) for _, _, span in collector.spans())
    assert wait_until(lambda: enricher.journal.pending_records == 0, 5)

    _send(enricher, _announcement(span_id=b"\x00\x00\x00\x00\x00\x00\x00\x05"))  # nothing else in it
    assert wait_until(lambda: enricher.journal.pending_records == 0, 5)
    time.sleep(0.3)
    assert collector.span_count() == 2


def test_an_announced_trace_is_forgotten_after_the_trace_ttl_unless_announced_again(
    start_enricher, collector
) -> None:
    """Why the API re-announces open runs: a quiet trace leaves the attributor after its TTL."""
    enricher = start_enricher(hold_seconds=0.5)
    enricher.attributor._trace_ttl = 1.0  # the default is 120 s; the mechanism is the same
    quiet, kept = b"\x08" * 16, b"\x09" * 16
    _send(enricher, _announcement(trace_id=quiet))
    _send(enricher, _announcement(trace_id=kept))
    for _ in range(4):  # 2 s of silence for `quiet`; `kept` is announced again meanwhile
        time.sleep(0.5)
        _send(enricher, _announcement(trace_id=kept))
    _send(enricher, _llm(b"\x00\x00\x00\x00\x00\x00\x00\x0a", trace_id=quiet))
    _send(enricher, _llm(b"\x00\x00\x00\x00\x00\x00\x00\x0b", trace_id=kept))
    assert collector.wait_for_spans(2, 5)
    by_trace = {span.trace_id: _attributes(span) for _, _, span in collector.spans()}
    assert by_trace[kept].get("metadata.agent_id") == AGENT.agent_id
    assert "metadata.agent_id" not in by_trace[quiet]
