"""OtlpGrpcForwarder against a real OTLP/gRPC receiver (tests/support/otlp_sink.py): no mocks."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from enricher.export.base import ExportBatch
from enricher.export.otlp import OtlpGrpcForwarder
from enricher.metrics import EnricherMetrics
from tests.support.otlp_sink import OtlpTestSink

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0  # generous upper bound for things that normally take milliseconds


# ---- helpers --------------------------------------------------------------------------
def make_request(batch_no: int, spans: int = 3, *, service: str = "svc", scope: str = "scope") -> bytes:
    """A serialized request whose spans carry the batch number in their span ids."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    for i in range(spans):
        span = ss.spans.add()
        span.trace_id = batch_no.to_bytes(16, "big")
        span.span_id = (batch_no * 1000 + i + 1).to_bytes(8, "big")
        span.name = f"op-{batch_no}-{i}"
        span.attributes.append(KeyValue(key="batch", value=AnyValue(int_value=batch_no)))
    return request.SerializeToString()


def span_ids(sink: OtlpTestSink) -> list[int]:
    return [int.from_bytes(span.span_id, "big") for _, _, span in sink.spans()]


def expected_ids(batch_nos: range | list[int], spans: int = 3) -> set[int]:
    return {b * 1000 + i + 1 for b in batch_nos for i in range(spans)}


class Acks:
    """Records every on_done call per batch number."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.calls: dict[int, list[bool]] = defaultdict(list)

    def batch(self, batch_no: int, spans: int = 3, **kw: str) -> ExportBatch:
        def on_done(delivered: bool) -> None:
            with self._cond:
                self.calls[batch_no].append(delivered)
                self._cond.notify_all()

        return ExportBatch(payload=make_request(batch_no, spans, **kw), span_count=spans, on_done=on_done)

    def wait(self, batch_nos: range | list[int], timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: all(self.calls.get(b) for b in batch_nos), timeout)

    def total(self) -> int:
        with self._cond:
            return sum(len(v) for v in self.calls.values())


def sample(metrics: EnricherMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or {"sink": "otlp"}) or 0.0


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def sink() -> Iterator[OtlpTestSink]:
    with OtlpTestSink() as s:
        yield s


@pytest.fixture
def down_sink() -> Iterator[OtlpTestSink]:
    """A sink that owns a port but is not serving yet (collector down)."""
    s = OtlpTestSink()
    s.stop()
    yield s
    s.stop()


@pytest.fixture
def metrics() -> EnricherMetrics:
    return EnricherMetrics()


@pytest.fixture
def forwarder(metrics: EnricherMetrics) -> Iterator[Callable[..., OtlpGrpcForwarder]]:
    made: list[OtlpGrpcForwarder] = []

    def make(endpoint: str, **kw: object) -> OtlpGrpcForwarder:
        kw = {"initial_backoff": 0.05, "max_backoff": 0.2, "timeout": 5.0, **kw}
        f = OtlpGrpcForwarder(endpoint, metrics=metrics, **kw)  # type: ignore[arg-type]
        made.append(f)
        return f

    yield make
    for f in made:
        f.shutdown(1.0)


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


def test_requests_are_gzip_compressed(forwarder):
    # gRPC hides grpc-encoding from handlers, so use a receiver that refuses gzip: a
    # compressing client is refused, a plain one gets through.
    with OtlpTestSink(accept_gzip=False) as plain_only:
        acks = Acks()
        forwarder(plain_only.endpoint, compression="gzip").submit(acks.batch(1), timeout=1)
        forwarder(plain_only.endpoint, compression="none").submit(acks.batch(2), timeout=1)
        assert acks.wait([1, 2])
        assert dict(acks.calls) == {1: [False], 2: [True]}
        assert expected_ids([2]) == set(span_ids(plain_only))

    with OtlpTestSink() as sink:
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


def test_retry_info_delay_is_honoured(sink, forwarder, metrics):
    fwd = forwarder(sink.endpoint, max_backoff=5.0)
    sink.fail_with(grpc.StatusCode.RESOURCE_EXHAUSTED, times=1, retry_delay=0.5)
    acks = Acks()
    started = time.monotonic()
    assert fwd.submit(acks.batch(1), timeout=1)
    assert acks.wait([1])
    assert time.monotonic() - started >= 0.5
    assert acks.calls[1] == [True]
    assert sample(metrics, "agentmon_export_retries_total") == 1


def test_resource_exhausted_without_retry_info_is_permanent(sink, forwarder, metrics):
    # e.g. a request over the collector's size limit: the same bytes would fail forever.
    fwd = forwarder(sink.endpoint)
    sink.fail_with(grpc.StatusCode.RESOURCE_EXHAUSTED, times=1)
    acks = Acks()
    assert fwd.submit(acks.batch(1), timeout=1)
    assert acks.wait([1])
    assert acks.calls[1] == [False]
    assert sample(metrics, "agentmon_export_retries_total") == 0


def test_permanent_rejection_fails_the_batch_and_later_batches_still_go(sink, forwarder, metrics):
    fwd = forwarder(sink.endpoint)
    sink.fail_with(grpc.StatusCode.INVALID_ARGUMENT)
    acks = Acks()
    assert fwd.submit(acks.batch(1, 4), timeout=1)
    assert acks.wait([1])
    assert acks.calls[1] == [False]
    assert sample(metrics, "agentmon_spans_failed_total") == 4
    assert sample(metrics, "agentmon_export_retries_total") == 0

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
