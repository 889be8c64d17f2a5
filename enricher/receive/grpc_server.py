"""OTLP/gRPC receiver (TraceService/Export) with the gRPC health checking service."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from enricher.metrics import EnricherMetrics
from enricher.pipeline import Overloaded, Pipeline
from enricher.receive.decode import InvalidPayload

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_EMPTY_RESPONSE = b""  # an empty ExportTraceServiceResponse: full success


class OtlpGrpcReceiver:
    def __init__(
        self,
        pipeline: Pipeline,
        metrics: EnricherMetrics,
        *,
        host: str,
        port: int,
        max_request_bytes: int,
        max_workers: int = 8,
    ) -> None:
        self._pipeline = pipeline
        self._metrics = metrics
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="otlp-grpc"),
            options=[
                ("grpc.max_receive_message_length", max_request_bytes),
                ("grpc.so_reuseport", 0),
            ],
            # A backstop against floods: gRPC's own RESOURCE_EXHAUSTED carries no RetryInfo, so
            # the pipeline's slots (which do) must run out well before this does.
            maximum_concurrent_rpcs=256,
        )
        # Raw bytes in and out: the payload is scanned once, here, and kept for the journal.
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._export)}
        )
        self._server.add_generic_rpc_handlers((handler,))
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind the OTLP/gRPC receiver to {host}:{port}")

    def start(self) -> None:
        self._server.start()
        for service in ("", SERVICE):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float = 5.0) -> None:
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait(grace + 1)

    def _export(self, payload: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            scanned = self._pipeline.scanner.scan(payload)
        except InvalidPayload as error:
            self._metrics.requests.labels("grpc", "invalid").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        try:
            self._pipeline.submit(scanned)
        except Overloaded as error:
            self._metrics.requests.labels("grpc", "overloaded").inc()
            context.set_trailing_metadata((("grpc-status-details-bin", _retry_status(error)),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{error}; retry later")
        self._metrics.requests.labels("grpc", "ok").inc()
        return _EMPTY_RESPONSE


def _retry_status(error: Overloaded) -> bytes:
    """google.rpc.Status with RetryInfo: OTLP clients retry RESOURCE_EXHAUSTED only with it."""
    retry = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=int(error.retry_after), nanos=0))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=str(error))
    status.details.add().Pack(retry)
    return status.SerializeToString()
