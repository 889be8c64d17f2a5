"""OTLP/gRPC receiver: clear errors for bad input, push-back when full, and it keeps serving."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.payloads import export_request as request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture
def export(start_enricher):
    enricher = start_enricher(max_request_bytes=64 * 1024)
    channel = grpc.insecure_channel(f"127.0.0.1:{enricher.grpc_port}")
    call = channel.unary_unary(EXPORT)
    yield call
    channel.close()


def test_malformed_payload_is_invalid_argument_and_serving_goes_on(export, collector) -> None:
    with pytest.raises(grpc.RpcError) as error:
        export(b"\xff\xff\xff\xff not protobuf", timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        export(request(trace_id=b"short"), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "trace_id must be 16 bytes" in error.value.details()
    export(request(), timeout=5)  # still serving
    assert collector.wait_for_spans(1, 10)


def test_oversize_request_is_a_clear_limit_error(export) -> None:
    with pytest.raises(grpc.RpcError) as error:
        export(request(spans=1, payload=100 * 1024), timeout=5)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in error.value.details()


def test_full_pipeline_answers_resource_exhausted_with_retry_info(start_enricher, collector) -> None:
    collector.stop()  # downstream down: the journal fills up
    enricher = start_enricher(journal_max_bytes=1024 * 1024, max_request_bytes=256 * 1024)
    with grpc.insecure_channel(f"127.0.0.1:{enricher.grpc_port}") as channel:
        export = channel.unary_unary(EXPORT)
        body = request(spans=10, payload=10_000)
        error = None
        for _ in range(200):
            try:
                export(body, timeout=5)
            except grpc.RpcError as rpc_error:
                error = rpc_error
                break
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = dict(error.trailing_metadata())["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(details)
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry) and retry.retry_delay.seconds >= 1
    accepted = enricher.metrics.requests.labels("grpc", "ok")._value.get()
    collector.start()  # downstream back: everything acknowledged arrives
    assert collector.wait_for_spans(int(accepted) * 10, 30)


def test_health_service_reports_serving(start_enricher) -> None:
    enricher = start_enricher()
    with grpc.insecure_channel(f"127.0.0.1:{enricher.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "opentelemetry.proto.collector.trace.v1.TraceService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
