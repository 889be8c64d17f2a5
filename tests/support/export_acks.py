"""Helpers for the forwarder tests: requests whose span ids carry a batch number, and a
recorder of on_done calls."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from enricher.export.base import ExportBatch
from enricher.metrics import EnricherMetrics
from tests.support.otlp_sink import OtlpTestSink

WAIT = 10.0  # generous upper bound for things that normally take milliseconds


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
