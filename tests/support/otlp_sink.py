"""A real OTLP/gRPC trace receiver for tests, standing in for the stock collector.

It records every ExportTraceServiceRequest it accepts and can be told to misbehave:
fail the next N requests (or all of them) with a status code, answer with
partial_success, hold requests until released, or go away and come back on the
same port (a collector restart). Nothing here is mocked: clients talk real gRPC to it.

    with OtlpTestSink() as sink:
        exporter = SomeExporter(sink.endpoint)
        ...
        assert sink.wait_for_spans(10, timeout=5)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


class OtlpTestSink(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC TraceService on 127.0.0.1 (ephemeral port unless ``port`` is given).

    ``max_receive_bytes`` defaults to 4 MiB like the collector's OTLP receiver.
    ``accept_gzip=False`` refuses gzip-compressed requests (UNIMPLEMENTED), which is how a
    test can tell that a client really compresses (gRPC hides grpc-encoding from handlers).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        start: bool = True,
        max_receive_bytes: int = 4 * 1024 * 1024,
        accept_gzip: bool = True,
    ) -> None:
        self._port = port
        self._max_receive_bytes = max_receive_bytes
        self._accept_gzip = accept_gzip
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None
        self.requests: list[ExportTraceServiceRequest] = []  # accepted requests, in arrival order
        self.request_sizes: list[int] = []  # serialized size of each accepted request
        self.attempts = 0  # every Export call, failed ones included
        self.pending = 0  # Export calls currently inside the handler (e.g. held by pause())
        self._fail_code: grpc.StatusCode | None = None
        self._fail_times: int | None = None  # None: until clear_failure()
        self._fail_message = ""
        self._fail_retry_delay: float | None = None
        self._reject: tuple[int, str] | None = None
        self._reject_times: int | None = None
        self._open = threading.Event()
        self._open.set()
        if start:
            self.start()

    # ---- lifecycle ---------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> OtlpTestSink:
        """Start serving; after stop(), on the same port as before."""
        if self._server is not None:
            return self
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="otlp-test-sink"),
            options=[
                ("grpc.max_receive_message_length", self._max_receive_bytes),
                # bit 0: identity, 1: deflate, 2: gzip
                ("grpc.compression_enabled_algorithms_bitset", 0b111 if self._accept_gzip else 0b011),
            ],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        port = server.add_insecure_port(f"127.0.0.1:{self._port}")
        if port == 0:
            raise RuntimeError(f"could not bind 127.0.0.1:{self._port}")
        self._port = port
        server.start()
        self._server = server
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop serving (in-flight calls are cancelled unless ``grace``); start() brings it back."""
        server, self._server = self._server, None
        if server is not None:
            # Calls held by pause() notice the cancellation and go unrecorded, like requests
            # a crashing collector never finished. A restarted sink starts unpaused.
            server.stop(grace).wait()
            self._open.set()

    def __enter__(self) -> OtlpTestSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- misbehaviour -------------------------------------------------------------
    def fail_with(
        self,
        code: grpc.StatusCode,
        times: int | None = None,
        *,
        message: str = "failing on purpose",
        retry_delay: float | None = None,
    ) -> None:
        """Fail the next ``times`` Export calls with ``code`` (``None``: every call until
        clear_failure()). ``retry_delay`` adds a google.rpc.RetryInfo to the status, like a
        throttling server."""
        with self._cond:
            self._fail_code, self._fail_times = code, times
            self._fail_message, self._fail_retry_delay = message, retry_delay

    def clear_failure(self) -> None:
        with self._cond:
            self._fail_code = self._fail_times = self._fail_retry_delay = None

    def reject_spans(self, rejected: int, message: str = "rejected on purpose", times: int | None = 1) -> None:
        """Accept the next ``times`` requests (``None``: all) but answer partial_success with
        ``rejected`` rejected spans."""
        with self._cond:
            self._reject, self._reject_times = (rejected, message), times

    def pause(self) -> None:
        """Hold every Export call inside the handler until resume() (backpressure, in-flight tests)."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    # ---- what arrived -------------------------------------------------------------
    def spans(self) -> list[tuple[dict[str, Any], str, Span]]:
        """Every received span as (resource attributes, scope name, span), in arrival order."""
        with self._cond:
            requests = list(self.requests)
        out = []
        for request in requests:
            for rs in request.resource_spans:
                resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, ss.scope.name, span) for span in ss.spans)
        return out

    def span_count(self) -> int:
        with self._cond:
            return self._span_count_locked()

    def request_count(self) -> int:
        with self._cond:
            return len(self.requests)

    def wait_for_spans(self, n: int, timeout: float) -> bool:
        """True once at least ``n`` spans have been accepted; False after ``timeout`` seconds."""
        return self._wait(lambda: self._span_count_locked() >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        return self._wait(lambda: len(self.requests) >= n, timeout)

    def wait_for_attempts(self, n: int, timeout: float) -> bool:
        """True once at least ``n`` Export calls (failed ones included) have reached the handler."""
        return self._wait(lambda: self.attempts >= n, timeout)

    def wait_for_pending(self, n: int, timeout: float) -> bool:
        """True once at least ``n`` Export calls are being held by pause()."""
        return self._wait(lambda: self.pending >= n, timeout)

    def clear(self) -> None:
        with self._cond:
            self.requests.clear()
            self.request_sizes.clear()
            self.attempts = 0

    # ---- the service --------------------------------------------------------------
    def Export(  # noqa: N802 (generated gRPC method name)
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        answer = self._answer(request, context.is_active)
        if not isinstance(answer, tuple):
            return answer
        code, message, retry_delay = answer
        if retry_delay is not None:
            context.set_trailing_metadata([("grpc-status-details-bin", _status_details(code, message, retry_delay))])
        context.abort(code, message)
        raise AssertionError("unreachable")  # context.abort raises

    def _answer(
        self, request: ExportTraceServiceRequest, is_active: Callable[[], bool]
    ) -> ExportTraceServiceResponse | tuple[grpc.StatusCode, str, float | None]:
        """Hold while paused, then record ``request`` and answer it, or fail as told.

        Shared by the gRPC service and the OTLP/HTTP one (tests/support/otlp_http_sink.py).
        A request whose client went away (``is_active()`` false) gets an empty answer and
        is not recorded, like one a crashing collector never finished."""
        with self._cond:
            self.attempts += 1
            self.pending += 1
            self._cond.notify_all()
        try:
            while not self._open.wait(0.05):
                if not is_active():
                    return ExportTraceServiceResponse()
        finally:
            with self._cond:
                self.pending -= 1
                self._cond.notify_all()
        if not is_active():  # cancelled while held (client gave up, or stop())
            return ExportTraceServiceResponse()
        with self._cond:
            failure = self._take_failure()
            if failure is None:
                self.requests.append(request)
                self.request_sizes.append(request.ByteSize())
                response = ExportTraceServiceResponse()
                if self._reject is not None:
                    response.partial_success.rejected_spans, response.partial_success.error_message = self._reject
                    if self._reject_times is not None:
                        self._reject_times -= 1
                        if self._reject_times <= 0:
                            self._reject = None
                self._cond.notify_all()
                return response
            self._cond.notify_all()
        return failure

    def _take_failure(self) -> tuple[grpc.StatusCode, str, float | None] | None:
        if self._fail_code is None:
            return None
        failure = (self._fail_code, self._fail_message, self._fail_retry_delay)
        if self._fail_times is not None:
            self._fail_times -= 1
            if self._fail_times <= 0:
                self._fail_code = self._fail_times = self._fail_retry_delay = None
        return failure

    def _span_count_locked(self) -> int:
        return sum(len(ss.spans) for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans)

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True


def _status_details(code: grpc.StatusCode, message: str, retry_delay: float) -> bytes:
    """A serialized google.rpc.Status carrying RetryInfo, as sent in grpc-status-details-bin."""
    from google.rpc import error_details_pb2, status_pb2

    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(int(retry_delay * 1e9))
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    return status.SerializeToString()
