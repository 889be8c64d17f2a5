"""The OTLP forwarders against real receivers, over both protocols: OtlpGrpcForwarder against
an OTLP/gRPC receiver (tests/support/otlp_sink.py), OtlpHttpForwarder against an OTLP/HTTP one
(tests/support/otlp_http_sink.py). No mocks: every behaviour here is QueuedForwarder's and
must hold over either wire. The fixtures are in conftest.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from enricher.export.base import ExportBatch
from tests.support.export_acks import WAIT, Acks, expected_ids, make_request, sample, span_ids, wait_until

pytestmark = pytest.mark.timeout(30)

# ---- delivery -------------------------------------------------------------------------
def test_batches_arrive_with_their_exact_spans(sink, forwarder, metrics):
    fwd = forwarder(sink.endpoint)
    acks = Acks()
    batches = [acks.batch(1, 2, service="a", scope="s1"), acks.batch(2, 3, service="b", scope="s2")]
    for b in batches:
        assert fwd.submit(b, timeout=1)
    assert fwd.force_flush(WAIT)

    assert dict(acks.calls) == {1: [True], 2: [True]}
    got = sorted(
        (res["service.name"], scope, span.SerializeToString(deterministic=True)) for res, scope, span in sink.spans()
    )
    want = []
    for b in batches:
        request = ExportTraceServiceRequest.FromString(b.payload)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                service = rs.resource.attributes[0].value.string_value
                want += [(service, ss.scope.name, s.SerializeToString(deterministic=True)) for s in ss.spans]
    assert got == sorted(want)
    assert sample(metrics, "agentmon_spans_forwarded_total") == 5
    assert sample(metrics, "agentmon_spans_failed_total") == 0
    assert sample(metrics, "agentmon_queue_depth", queue="otlp") == 0


def test_queued_batches_are_coalesced_into_one_request(sink, forwarder):
    fwd = forwarder(sink.endpoint, max_in_flight=1)
    acks = Acks()
    sink.pause()  # hold the first request so that the rest queue up behind it
    assert fwd.submit(acks.batch(0), timeout=1)
    assert sink.wait_for_pending(1, WAIT)
    for n in range(1, 20):
        assert fwd.submit(acks.batch(n), timeout=1)
    sink.resume()

    assert acks.wait(range(20))
    assert fwd.force_flush(WAIT)
    assert sink.request_count() == 2  # the held one, then the 19 queued ones together
    assert sorted(span_ids(sink)) == sorted(expected_ids(range(20)))
    assert all(calls == [True] for calls in acks.calls.values())


def test_coalescing_stays_under_max_request_bytes(sink, forwarder):
    batch_nos = range(100, 120)  # same-sized payloads
    limit = 3 * len(make_request(100))
    fwd = forwarder(sink.endpoint, max_in_flight=1, max_request_bytes=limit)
    acks = Acks()
    sink.pause()
    assert fwd.submit(acks.batch(batch_nos[0]), timeout=1)
    assert sink.wait_for_pending(1, WAIT)
    for n in batch_nos[1:]:
        assert fwd.submit(acks.batch(n), timeout=1)
    sink.resume()

    assert acks.wait(batch_nos)
    assert max(sink.request_sizes) == limit
    assert sink.request_count() == 1 + 7  # the held one, then 19 queued batches, 3 per request
    assert sorted(span_ids(sink)) == sorted(expected_ids(batch_nos))


def test_requests_are_gzip_compressed(sink_class, forwarder):
    # gRPC hides grpc-encoding from handlers, so use a receiver that refuses gzip: a
    # compressing client is refused, a plain one gets through.
    with sink_class(accept_gzip=False) as plain_only:
        acks = Acks()
        forwarder(plain_only.endpoint, compression="gzip").submit(acks.batch(1), timeout=1)
        forwarder(plain_only.endpoint, compression="none").submit(acks.batch(2), timeout=1)
        assert acks.wait([1, 2])
        assert dict(acks.calls) == {1: [False], 2: [True]}
        assert expected_ids([2]) == set(span_ids(plain_only))

    with sink_class() as sink:
        acks = Acks()
        fwd = forwarder(sink.endpoint)  # gzip is the default
        assert fwd.submit(acks.batch(3), timeout=1)
        assert acks.wait([3]) and acks.calls[3] == [True]
        assert set(span_ids(sink)) == expected_ids([3])


def test_partial_success_counts_rejected_spans_as_failed(sink, forwarder, metrics):
    fwd = forwarder(sink.endpoint)
    sink.reject_spans(2, "bad spans")
    acks = Acks()
    assert fwd.submit(acks.batch(1, 5), timeout=1)
    assert acks.wait([1])
    assert acks.calls[1] == [True]  # retrying would not help
    assert sample(metrics, "agentmon_spans_failed_total") == 2
    assert sample(metrics, "agentmon_spans_forwarded_total") == 3
    assert sample(metrics, "agentmon_export_retries_total") == 0


# ---- outages and retries ----------------------------------------------------------------
def test_collector_down_at_start_then_up(down_sink, forwarder, metrics):
    fwd = forwarder(down_sink.endpoint)
    acks = Acks()
    for n in range(5):
        assert fwd.submit(acks.batch(n), timeout=1)
    assert wait_until(lambda: sample(metrics, "agentmon_export_retries_total") >= 3)
    assert acks.total() == 0

    down_sink.start()
    assert acks.wait(range(5))
    assert fwd.force_flush(WAIT)
    assert all(calls == [True] for calls in acks.calls.values())
    assert sorted(span_ids(down_sink)) == sorted(expected_ids(range(5)))
    assert sample(metrics, "agentmon_spans_forwarded_total") == 15


def test_collector_restart_mid_way_loses_nothing(sink, forwarder, metrics):
    fwd = forwarder(sink.endpoint)
    acks = Acks()
    port = sink.port
    for n in range(10):
        assert fwd.submit(acks.batch(n), timeout=1)
    assert fwd.force_flush(WAIT)

    # A request in flight when the collector dies, then more batches during the outage.
    sink.pause()
    for n in range(10, 15):
        assert fwd.submit(acks.batch(n), timeout=1)
    assert sink.wait_for_pending(1, WAIT)
    sink.stop()
    for n in range(15, 20):
        assert fwd.submit(acks.batch(n), timeout=1)
    assert wait_until(lambda: sample(metrics, "agentmon_export_retries_total") >= 2)

    sink.start()
    assert sink.port == port
    for n in range(20, 30):
        assert fwd.submit(acks.batch(n), timeout=1)
    assert acks.wait(range(30))
    assert fwd.force_flush(WAIT)

    assert {n: calls for n, calls in acks.calls.items()} == {n: [True] for n in range(30)}
    assert set(span_ids(sink)) == expected_ids(range(30))  # at least once


def test_the_servers_retry_delay_is_honoured(sink, forwarder, metrics):
    # gRPC: RetryInfo in the status details; HTTP: Retry-After, in whole seconds.
    fwd = forwarder(sink.endpoint, max_backoff=5.0)
    sink.fail_with(grpc.StatusCode.RESOURCE_EXHAUSTED, times=1, retry_delay=1.0)
    acks = Acks()
    started = time.monotonic()
    assert fwd.submit(acks.batch(1), timeout=1)
    assert acks.wait([1])
    assert time.monotonic() - started >= 1.0  # our own backoff here is at most 0.2 s
    assert acks.calls[1] == [True]
    assert sample(metrics, "agentmon_export_retries_total") == 1


def test_a_zero_retry_delay_does_not_make_the_sender_spin(sink, forwarder, metrics):
    # RetryInfo of 0 s, or Retry-After: 0 (a past date reads the same): our backoff still applies.
    fwd = forwarder(sink.endpoint, initial_backoff=0.2, max_backoff=0.2)
    sink.fail_with(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay=0.0)
    acks = Acks()
    assert fwd.submit(acks.batch(1), timeout=1)
    time.sleep(1.0)
    # Paced by a backoff of 0.1-0.2 s: at most 11 requests in that second. Spinning made thousands.
    assert 2 <= sink.attempts <= 12, sink.attempts
    sink.clear_failure()
    assert acks.wait([1])
    assert acks.calls[1] == [True]


# Over HTTP these are 400, 500 and 403 (tests/support/otlp_http_sink.py): none of them is retried.
@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL, grpc.StatusCode.PERMISSION_DENIED]
)
def test_permanent_rejection_fails_the_batch_and_later_batches_still_go(sink, forwarder, metrics, code, caplog):
    fwd = forwarder(sink.endpoint)
    sink.fail_with(code, message="no such tenant")
    acks = Acks()
    assert fwd.submit(acks.batch(1, 4), timeout=1)
    assert acks.wait([1])
    assert acks.calls[1] == [False]
    assert sample(metrics, "agentmon_spans_failed_total") == 4
    assert sample(metrics, "agentmon_export_retries_total") == 0
    assert "no such tenant" in caplog.text  # the collector's own message (over HTTP, from the Status body)

    sink.clear_failure()
    assert fwd.submit(acks.batch(2), timeout=1)
    assert acks.wait([2])
    assert fwd.force_flush(WAIT)
    assert dict(acks.calls) == {1: [False], 2: [True]}
    assert set(span_ids(sink)) == expected_ids([2])
    assert sample(metrics, "agentmon_spans_forwarded_total") == 3


def test_rejected_coalesced_request_is_retried_batch_by_batch(sink, forwarder, metrics):
    fwd = forwarder(sink.endpoint, max_in_flight=1)
    acks = Acks()
    sink.pause()
    assert fwd.submit(acks.batch(0), timeout=1)
    assert sink.wait_for_pending(1, WAIT)
    for n in range(1, 4):
        assert fwd.submit(acks.batch(n), timeout=1)
    # The held request (batch 0 alone) and the coalesced one (1-3) are both refused; the
    # batches of the coalesced one, resent alone, get through.
    sink.fail_with(grpc.StatusCode.INVALID_ARGUMENT, times=2)
    sink.resume()

    assert acks.wait(range(4))
    assert fwd.force_flush(WAIT)
    assert dict(acks.calls) == {0: [False], 1: [True], 2: [True], 3: [True]}
    assert sorted(span_ids(sink)) == sorted(expected_ids(range(1, 4)))
    assert sample(metrics, "agentmon_spans_failed_total") == 3
    assert sample(metrics, "agentmon_spans_forwarded_total") == 9


# ---- backpressure and shutdown ------------------------------------------------------------
def test_queue_is_bounded_while_the_collector_is_down(down_sink, forwarder, metrics):
    # max_request_bytes=1: no coalescing, so exactly one batch is in flight.
    fwd = forwarder(down_sink.endpoint, max_queue_batches=3, max_in_flight=1, max_request_bytes=1)
    acks = Acks()
    accepted = 0
    while accepted < 50:
        started = time.monotonic()
        if not fwd.submit(acks.batch(accepted), timeout=0.2):
            refused_after = time.monotonic() - started
            break
        accepted += 1
    assert accepted == 3 + 1  # the queue plus the batch being retried
    assert refused_after >= 0.2
    assert sample(metrics, "agentmon_queue_depth", queue="otlp") == 3

    down_sink.start()
    assert acks.wait(range(accepted))
    assert fwd.submit(acks.batch(100), timeout=1)
    assert fwd.force_flush(WAIT)
    assert sorted(span_ids(down_sink)) == sorted(expected_ids([*range(accepted), 100]))


def test_shutdown_delivers_what_it_can(sink, forwarder):
    fwd = forwarder(sink.endpoint)
    acks = Acks()
    for n in range(10):
        assert fwd.submit(acks.batch(n), timeout=1)
    fwd.shutdown(WAIT)
    assert {n: calls for n, calls in acks.calls.items()} == {n: [True] for n in range(10)}
    assert not fwd.submit(acks.batch(99), timeout=0.1)


def test_shutdown_leaves_undelivered_batches_unacknowledged(down_sink, forwarder, metrics):
    fwd = forwarder(down_sink.endpoint, max_queue_batches=2, max_in_flight=1, max_request_bytes=1)
    acks = Acks()
    for n in range(3):
        assert fwd.submit(acks.batch(n), timeout=1)
    blocked: list[bool] = []
    submitter = threading.Thread(target=lambda: blocked.append(fwd.submit(acks.batch(3), timeout=None)))
    submitter.start()  # blocks: the queue is full
    assert wait_until(lambda: sample(metrics, "agentmon_export_retries_total") >= 1)

    started = time.monotonic()
    fwd.shutdown(0.5)
    assert time.monotonic() - started < 0.5 + 0.3
    submitter.join(1)
    assert blocked == [False]  # a blocked submit is released, and refused
    assert not fwd.submit(acks.batch(4), timeout=0.1)

    down_sink.start()  # even if the collector comes back now, nothing is sent or acknowledged
    time.sleep(0.5)
    assert acks.total() == 0
    assert down_sink.span_count() == 0
    assert sample(metrics, "agentmon_queue_depth", queue="otlp") == 0


def test_no_acknowledgement_after_shutdown_returns(sink, forwarder, caplog):
    # A sender between getting its answer and acknowledging (here: logging that the collector
    # works again, made slow) when shutdown comes: shutdown waits for it, or it does not ack.
    in_log = threading.Event()

    class SlowHandler(logging.Handler):
        def handle(self, record):  # not emit(): the handler's lock would hold shutdown's own log line up
            if "works again" in record.getMessage():
                in_log.set()
                time.sleep(0.5)
            return True

    handler = SlowHandler()
    logger = logging.getLogger("enricher.export.forwarder")
    logger.addHandler(handler)
    try:
        fwd = forwarder(sink.endpoint)
        sink.fail_with(grpc.StatusCode.UNAVAILABLE, times=1)
        events: list[object] = []
        with caplog.at_level(logging.INFO, logger="enricher.export.forwarder"):
            assert fwd.submit(ExportBatch(make_request(1, 1), 1, lambda ok: events.append(("on_done", ok))), timeout=1)
            assert in_log.wait(WAIT)
            fwd.shutdown(0.05)
            events.append("shutdown returned")
            time.sleep(0.8)
    finally:
        logger.removeHandler(handler)
    assert events[-1] == "shutdown returned", events


def test_shutdown_abandons_a_request_stuck_in_flight(sink, forwarder):
    fwd = forwarder(sink.endpoint, timeout=30.0)
    acks = Acks()
    sink.pause()  # the collector accepts the call and never answers
    assert fwd.submit(acks.batch(1), timeout=1)
    assert sink.wait_for_pending(1, WAIT)

    started = time.monotonic()
    fwd.shutdown(0.3)
    assert time.monotonic() - started < 0.3 + 0.3
    sink.resume()
    time.sleep(0.3)
    assert acks.total() == 0
