"""Hand-built OTLP requests for receiver tests."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans


def export_request(spans: int = 1, payload: int = 0, trace_id: bytes = b"\x01" * 16) -> bytes:
    """A serialized request with ``spans`` spans of one trace, each name padded by ``payload`` bytes."""
    resource_spans = ResourceSpans()
    scope_spans = resource_spans.scope_spans.add()
    for i in range(spans):
        span = scope_spans.spans.add(trace_id=trace_id, span_id=(i + 1).to_bytes(8, "big"), name="s" + "x" * payload)
        span.start_time_unix_nano = 1
    return ExportTraceServiceRequest(resource_spans=[resource_spans]).SerializeToString()
