"""Pipeline guarantees under faults: nothing acknowledged is dropped, the worker never dies."""

from __future__ import annotations

import grpc

from tests.enricher.conftest import stamped, tracer_provider, wait_until
from tests.support.payloads import export_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _send(enricher, payload: bytes) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{enricher.grpc_port}") as channel:
        channel.unary_unary(EXPORT)(payload, timeout=10)


def test_a_request_that_cannot_be_enriched_is_forwarded_as_received(start_enricher, collector) -> None:
    enricher = start_enricher()
    attributor = enricher.attributor
    original = attributor.process
    calls = {"n": 0}

    def fail_once(records):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected fault")
        return original(records)

    attributor.process = fail_once
    _send(enricher, export_request(spans=3))
    assert collector.wait_for_spans(3, 10)
    _send(enricher, export_request(spans=2, trace_id=b"\x02" * 16))  # the worker goes on
    assert collector.wait_for_spans(5, 10)
    assert wait_until(lambda: enricher.journal.pending_records == 0, 5)


def test_the_worker_survives_a_failing_commit(start_enricher, collector) -> None:
    enricher = start_enricher()
    journal = enricher.journal
    original = journal.commit
    calls = {"n": 0}

    def fail_once(seq):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return original(seq)

    journal.commit = fail_once
    for i in range(3):
        _send(enricher, export_request(spans=1, trace_id=bytes([i + 1]) * 16))
    assert collector.wait_for_spans(3, 10)
    assert wait_until(lambda: calls["n"] >= 2 and enricher.journal.pending_records == 0, 5)


def test_stamped_requests_are_split_to_the_downstream_limit(start_enricher, collector) -> None:
    enricher = start_enricher()
    # As if the downstream took 64 KiB requests: the pipeline splits, the forwarder never re-joins past it.
    enricher.pipeline._max_export_bytes = 64 * 1024
    enricher.sinks[0]._max_request_bytes = 64 * 1024
    tracer = tracer_provider(enricher).get_tracer("app")
    provider_spans = 300
    with tracer.start_as_current_span("invoke_agent big", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "big"}):
        for i in range(provider_spans):
            with tracer.start_as_current_span(f"chat {i}", attributes={"payload": "x" * 500}):
                pass
    assert collector.wait_for_spans(provider_spans + 1, 20)
    assert max(collector.request_sizes) <= 64 * 1024 + 1024
    assert len({v["metadata.agent_id"] for v in stamped(collector).values()}) == 1
