"""Sending run spans to the enricher over OTLP/gRPC, synchronously: the caller learns at
once whether the enricher took them (it journals a request before it answers)."""

from __future__ import annotations

import logging

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from registry_api.runs.spans import resource_spans

log = logging.getLogger(__name__)

_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Worth another try later: the enricher is down, restarting, or pushing back (journal full).
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)
MAX_SPANS_PER_REQUEST = 1000  # re-announcements and shutdown go out in batches of this many


class EnricherUnavailable(Exception):
    """The enricher did not take the spans now; the same call may succeed later."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EnricherRejected(Exception):
    """The enricher refused the spans for good (it found them malformed)."""


class OtlpRunExporter:
    """One gRPC channel to the enricher's OTLP receiver at ``endpoint`` (host:port)."""

    def __init__(self, endpoint: str, *, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        # Find a restarted enricher within 2 s (gRPC's own reconnect backoff grows to 120 s).
        self._channel = grpc.insecure_channel(
            endpoint,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 500),
                ("grpc.min_reconnect_backoff_ms", 500),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self._export = self._channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
            _registered_method=True,
        )
        self._closed = False

    def send(self, spans: list[Span]) -> None:
        """Export ``spans``; returns once the enricher accepted them.
        Raises EnricherUnavailable (retry later) or EnricherRejected."""
        for first in range(0, len(spans), MAX_SPANS_PER_REQUEST):
            self._send(spans[first : first + MAX_SPANS_PER_REQUEST])

    def _send(self, spans: list[Span]) -> None:
        if self._closed:
            raise EnricherUnavailable("the API is shutting down")
        request = ExportTraceServiceRequest(resource_spans=[resource_spans(spans)])
        try:
            response = self._export(request, timeout=self._timeout)
        except grpc.RpcError as error:
            code = error.code()
            if code in _TRANSIENT:
                raise EnricherUnavailable(
                    f"the enricher at {self.endpoint} did not take the span ({code.name}: {error.details()})",
                    retry_after=5,
                ) from None
            raise EnricherRejected(
                f"the enricher at {self.endpoint} refused the span ({code.name}: {error.details()})"
            ) from None
        except ValueError as error:  # the channel was closed under us (shutdown)
            raise EnricherUnavailable(f"cannot reach the enricher: {error}") from None
        rejected = response.partial_success.rejected_spans
        if rejected:
            raise EnricherRejected(
                f"the enricher rejected {rejected} span(s): {response.partial_success.error_message}"
            )

    def close(self) -> None:
        self._closed = True
        self._channel.close()
