"""Pipeline guarantees under faults: nothing acknowledged is dropped, the worker never dies."""

from __future__ import annotations

import threading
import time

import grpc

from enricher.journal import Journal
from enricher.metrics import EnricherMetrics
from enricher.pipeline import Pipeline
from enricher.receive.scan import RequestScanner
from tests.enricher.conftest import stamped, tracer_provider, wait_until
from tests.support.load_client import SpanFactory
from tests.support.payloads import export_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _send(enricher, payload: bytes) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{enricher.grpc_port}") as channel:
        channel.unary_unary(EXPORT)(payload, timeout=10)


def _delivered(collector) -> set[bytes]:
    return {span.span_id for _, _, span in collector.spans()}


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


def _orphans_and_service_traces(factory: SpanFactory) -> tuple[bytes, set[bytes], set[bytes]]:
    """A request of 300 spans whose first few are LLM calls of two runs whose agent span never
    comes (held for the whole hold), then whole service traces: (payload, span ids, orphan ids)."""
    spans = []
    for _ in range(2):
        children, _agent_span = factory.agent_run("never-finishes")
        spans.extend(children)
    orphans = {span.span_id for span in spans}
    while len(spans) < 300:
        spans.extend(factory.service_trace())
    return SpanFactory.request(spans), {span.span_id for span in spans}, orphans


def test_held_spans_are_carried_forward_so_that_the_journal_commits(start_enricher, collector) -> None:
    # Every request carries LLM calls whose agent span never comes: without carrying them
    # forward, each record would stay in the journal for the whole hold time.
    mib = 1024 * 1024
    enricher = start_enricher(journal_max_bytes=2 * mib, max_request_bytes=mib, hold_seconds=8.0)
    factory = SpanFactory(seed=3)
    orphans: set[bytes] = set()
    sent: set[bytes] = set()
    sent_bytes = 0
    for _ in range(16):
        payload, span_ids, orphan_ids = _orphans_and_service_traces(factory)
        sent.update(span_ids)
        orphans.update(orphan_ids)
        sent_bytes += len(payload)
        _send(enricher, payload)
    assert sent_bytes > enricher.journal.max_bytes * 3 / 4

    # Most records commit while their orphans are still held (a quarter of the journal may
    # wait: it is carried forward only past that) ...
    assert wait_until(lambda: enricher.attributor.held_count == len(orphans), 5)
    assert wait_until(lambda: enricher.journal.last_committed >= 7, 5), enricher.journal.last_committed
    assert enricher.attributor.held_count == len(orphans)
    assert enricher.metrics.spans_carried_forward._value.get() > 0
    assert wait_until(lambda: sent - _delivered(collector) == orphans, 5)

    # ... and are delivered once their hold is over, after which nothing is left in the journal.
    assert collector.wait_for_spans(len(sent), 15)
    assert _delivered(collector) == sent
    assert wait_until(lambda: enricher.journal.pending_records == 0, 5), enricher.journal.pending_records


def test_carrying_forward_stops_when_the_collector_stops_answering(start_enricher, collector) -> None:
    # With the collector holding every Export, the oldest record waits for its delivery:
    # re-journaling held spans would free nothing, and must not go on filling the journal.
    mib = 1024 * 1024
    enricher = start_enricher(journal_max_bytes=2 * mib, max_request_bytes=mib, hold_seconds=30.0)
    carried = enricher.metrics.spans_carried_forward._value.get
    factory = SpanFactory(seed=5)
    for _ in range(12):
        _send(enricher, _orphans_and_service_traces(factory)[0])
    assert wait_until(lambda: carried() > 0, 5)
    time.sleep(0.5)
    collector.pause()
    try:
        before = carried()
        for _ in range(10):
            _send(enricher, _orphans_and_service_traces(factory)[0])
        assert enricher.journal.pending_bytes > enricher.journal.max_bytes / 3  # past where carrying starts
        # One more carry (of every held span) may come before the pipeline sees that it freed nothing; then none.
        time.sleep(1.0)
        after_one = carried()
        assert after_one - before <= enricher.attributor.held_count
        time.sleep(1.5)
        assert carried() == after_one
    finally:
        collector.resume()
    assert wait_until(lambda: enricher.journal.pending_bytes < mib / 2, 10), enricher.journal.pending_bytes


class _ScriptedProcessor:
    """Carries a record forward while later requests still wait in the queue, as
    ``Enrichment.carry_forward`` does when the journal fills between two requests."""

    def __init__(self) -> None:
        self.all_submitted = threading.Event()
        self.go_on = threading.Event()
        self.opened_1 = threading.Event()
        self.carried_seq: int | None = None

    def start(self, outputs) -> None:
        self.outputs = outputs

    def process(self, seq: int, scanned) -> None:
        if seq == 0:
            self.all_submitted.wait(10)
            self.carried_seq = self.outputs.carry(scanned.payload, 1, {})
            self.outputs.settled({self.carried_seq: 1})  # delivered at once
            self.outputs.opened(0, 0)
        elif seq == 1:
            self.go_on.wait(10)
            self.outputs.opened(1, 1)  # delivered later, by the test
            self.opened_1.set()
        else:
            self.outputs.opened(seq, 0)

    def expire(self) -> None:
        pass

    def release_all(self) -> None:
        pass

    def held_from(self, seq: int) -> int:
        return 0

    def carry_forward(self, upto: int, max_record_bytes: int) -> int:
        return 0


def test_the_commit_cursor_never_passes_a_queued_request_nor_stops_before_a_carried_one(tmp_path) -> None:
    scanner = RequestScanner(())
    journal = Journal(tmp_path / "journal", max_bytes=1 << 20)
    processor = _ScriptedProcessor()
    line = Pipeline(processor, scanner=scanner, sinks=[], journal=journal, metrics=EnricherMetrics(),
                    commit_interval=0.0)
    line.start()
    try:
        for seq in range(3):
            line.submit(scanner.scan(export_request(spans=1, trace_id=bytes([seq + 1]) * 16)))
        processor.all_submitted.set()
        # Record 3 (carried) is settled, but requests 1 and 2, journaled before it, are not processed yet.
        assert wait_until(lambda: processor.carried_seq == 3 and journal.last_committed == 0, 5)
        time.sleep(0.2)
        assert journal.last_committed == 0
        processor.go_on.set()
        # Request 1 is processed, its delivery outstanding: the cursor waits for it ...
        assert processor.opened_1.wait(5)
        time.sleep(0.2)
        assert journal.last_committed == 0
        # ... and, once it is settled, moves past 2 and the carried record 3 at once.
        line.settled({1: 1})
        assert wait_until(lambda: journal.last_committed == 3, 5), journal.last_committed
    finally:
        line.shutdown(timeout=2)
