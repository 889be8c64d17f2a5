"""Forwarding spans to a downstream OTLP/gRPC collector (the stock otelcol-contrib).

Modelled on the OpenTelemetry SDK's OTLP exporter (one small class, explicit flush and
shutdown), with two differences that the pipeline needs:

* it never gives up on a transient failure: batches stay un-acknowledged and are retried
  (backoff capped at ``max_backoff``) until the collector takes them, and shutdown leaves
  the undelivered ones un-acknowledged so that the pipeline replays them from its journal;
* it never re-encodes: queued payloads are serialized ``ExportTraceServiceRequest``s,
  concatenated into one request (protobuf merges repeated fields) and sent as raw bytes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from enricher.export.base import ExportBatch
from enricher.metrics import EnricherMetrics

try:  # googleapis-common-protos: only needed to read a server's RetryInfo
    from google.rpc import error_details_pb2, status_pb2
except ImportError:  # pragma: no cover - without it we fall back to our own backoff
    error_details_pb2 = status_pb2 = None

log = logging.getLogger(__name__)

_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# The OTLP specification's retryable codes (protocol/otlp "Failures"). RESOURCE_EXHAUSTED is
# retryable only when the server sends RetryInfo: without it, it usually means "request too
# large", which would fail forever. Everything else (INVALID_ARGUMENT, UNKNOWN, INTERNAL,
# PERMISSION_DENIED, UNIMPLEMENTED, ...) is permanent: retrying the same bytes cannot help,
# and retrying forever would wedge the pipeline behind one poisoned request.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class OtlpGrpcForwarder:
    """A SpanSink that delivers batches to an OTLP/gRPC TraceService at ``endpoint`` (host:port)."""

    def __init__(
        self,
        endpoint: str,
        *,
        metrics: EnricherMetrics,
        insecure: bool = True,
        compression: str = "gzip",
        timeout: float = 10.0,
        max_queue_batches: int = 64,
        max_request_bytes: int = 4 * 1024 * 1024,
        max_in_flight: int = 2,
        initial_backoff: float = 0.5,
        max_backoff: float = 10.0,
        name: str = "otlp",
    ) -> None:
        if compression not in ("gzip", "none"):
            raise ValueError(f"compression must be 'gzip' or 'none', not {compression!r}")
        if max_queue_batches < 1 or max_in_flight < 1 or max_request_bytes < 1:
            raise ValueError("max_queue_batches, max_in_flight and max_request_bytes must be at least 1")
        self.name = name
        self._endpoint = endpoint
        self._timeout = timeout
        self._max_queue = max_queue_batches
        self._max_request_bytes = max_request_bytes
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff

        self._forwarded = metrics.spans_forwarded.labels(sink=name)
        self._failed = metrics.spans_failed.labels(sink=name)
        self._retries = metrics.export_retries.labels(sink=name)
        self._depth = metrics.queue_depth.labels(queue=name)
        self._depth.set(0)

        # gRPC's own reconnect backoff grows to 120 s by default; cap it at ours so that a
        # restarted collector is noticed as soon as our retries come round again.
        reconnect_ms = max(100, int(max_backoff * 1000))
        options = [
            ("grpc.initial_reconnect_backoff_ms", min(1000, reconnect_ms)),
            ("grpc.min_reconnect_backoff_ms", min(1000, reconnect_ms)),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms),
        ]
        wire_compression = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        if insecure:
            self._channel = grpc.insecure_channel(endpoint, options=options, compression=wire_compression)
        else:
            self._channel = grpc.secure_channel(
                endpoint, grpc.ssl_channel_credentials(), options=options, compression=wire_compression
            )
        # request_serializer=None: the payload bytes go on the wire as they are.
        self._export = self._channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
            _registered_method=True,
        )

        self._cond = threading.Condition()
        self._queue: deque[ExportBatch] = deque()
        self._in_flight = 0  # batches taken off the queue and not finished yet
        self._accepting = True
        self._stopped = threading.Event()  # set by shutdown: senders abandon what they hold
        self._failing = False  # for logging an outage once, not once per attempt
        # Senders back off on their own timers; when one gets through, the others retry at
        # once instead of sleeping out their backoff while the journal stays full.
        self._recovery = threading.Condition()
        self._recoveries = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-sender-{i}", daemon=True) for i in range(max_in_flight)
        ]
        for thread in self._threads:
            thread.start()

    # ---- SpanSink ---------------------------------------------------------------------
    def submit(self, batch: ExportBatch, timeout: float | None = None) -> bool:
        with self._cond:
            if not self._cond.wait_for(
                lambda: not self._accepting or len(self._queue) < self._max_queue, timeout=timeout
            ):
                return False
            if not self._accepting:
                return False
            self._queue.append(batch)
            self._depth.set(len(self._queue))
            self._cond.notify_all()
            return True

    def force_flush(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and self._in_flight == 0, timeout=timeout)

    def shutdown(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            if not self._accepting:
                return
            self._accepting = False
            self._cond.notify_all()  # wake submitters blocked on a full queue: they get False
        if not self.force_flush(timeout):
            log.warning("%s: shutting down with undelivered spans; they stay unacknowledged", self.name)
        self._stopped.set()
        with self._recovery:
            self._recovery.notify_all()
        with self._cond:
            # Not acknowledged on purpose: the pipeline still has them in its journal.
            self._queue.clear()
            self._depth.set(0)
            self._cond.notify_all()
        # Closing the channel cancels RPCs still in flight; their senders see _stopped and
        # drop the batches without on_done.
        self._channel.close()
        for thread in self._threads:  # daemon threads: if one is slow to notice, do not wait past timeout
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---- sending ----------------------------------------------------------------------
    def _run(self) -> None:
        while (batches := self._take()) is not None:
            try:
                self._deliver(batches)
            except Exception:  # never lose a sender thread; _deliver only fails on bugs
                log.exception("%s: unexpected error delivering %d batches", self.name, len(batches))
            finally:
                with self._cond:
                    self._in_flight -= len(batches)
                    self._cond.notify_all()

    def _take(self) -> list[ExportBatch] | None:
        """Wait for queued batches; take as many as fit in one request (at least one)."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._stopped.is_set())
            if self._stopped.is_set():
                return None
            batches = [self._queue.popleft()]
            size = len(batches[0].payload)
            while self._queue and size + len(self._queue[0].payload) <= self._max_request_bytes:
                size += len(self._queue[0].payload)
                batches.append(self._queue.popleft())
            self._in_flight += len(batches)
            self._depth.set(len(self._queue))
            self._cond.notify_all()  # room in the queue for blocked submitters
            return batches

    def _deliver(self, batches: list[ExportBatch]) -> None:
        """Send ``batches`` as one request until it is accepted or rejected for good, or until
        shutdown (then return without acknowledging anything)."""
        payload = b"".join(batch.payload for batch in batches)
        spans = sum(batch.span_count for batch in batches)
        attempt = 0
        while not self._stopped.is_set():
            # Noted before the attempt: a recovery by another sender during it must still
            # cut this sender's backoff short.
            recoveries = self._recoveries
            try:
                response = self._export(payload, timeout=self._timeout)
            except grpc.RpcError as error:
                code = error.code()
                delay = _retry_delay(error)
                if code in _RETRYABLE or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
                    if self._stopped.is_set():
                        return
                    self._retries.inc()
                    if not self._failing:
                        self._failing = True
                        log.warning("%s: export to %s failed (%s: %s); retrying", self.name, self._endpoint,
                                    code.name, error.details())
                    # Honour the server's RetryInfo; bounded so that a bogus hint cannot stall us.
                    self._pause(min(delay, self._max_backoff) if delay is not None else self._backoff(attempt), recoveries)
                    attempt += 1
                    continue
                if len(batches) > 1:
                    # Coalescing must not widen a rejection: resend each batch alone so that
                    # only the ones the collector really refuses are failed.
                    for batch in batches:
                        self._deliver([batch])
                    return
                log.error("%s: %s rejected %d spans permanently (%s: %s)", self.name, self._endpoint, spans,
                          code.name, error.details())
                self._failed.inc(spans)
                _finish(batches, False)
                return
            except Exception as error:  # e.g. ValueError from a channel closed by shutdown
                if self._stopped.is_set():
                    return
                log.warning("%s: export to %s raised %r; retrying", self.name, self._endpoint, error)
                self._retries.inc()
                self._pause(self._backoff(attempt), recoveries)
                attempt += 1
                continue
            if self._failing:
                self._failing = False
                log.info("%s: export to %s works again", self.name, self._endpoint)
                with self._recovery:
                    self._recoveries += 1
                    self._recovery.notify_all()
            rejected = min(response.partial_success.rejected_spans, spans)
            if rejected:
                # Accepted as a request: retrying the same spans would be rejected again.
                log.warning("%s: %s rejected %d of %d spans: %s", self.name, self._endpoint, rejected, spans,
                            response.partial_success.error_message)
                self._failed.inc(rejected)
            self._forwarded.inc(spans - rejected)
            _finish(batches, True)
            return

    def _pause(self, seconds: float, recoveries_seen: int) -> None:
        """Sleep before a retry; cut short by shutdown or by another sender getting through
        since ``recoveries_seen`` was read."""
        with self._recovery:
            self._recovery.wait_for(
                lambda: self._stopped.is_set() or self._recoveries != recoveries_seen, timeout=seconds
            )

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter so that several senders (and agentmon instances) do not
        # hammer a recovering collector in lockstep.
        ceiling = min(self._max_backoff, self._initial_backoff * 2 ** min(attempt, 32))
        return random.uniform(ceiling / 2, ceiling)


def _finish(batches: list[ExportBatch], delivered: bool) -> None:
    for batch in batches:
        try:
            batch.on_done(delivered)
        except Exception:  # a broken callback must not kill the sender or skip the others
            log.exception("on_done callback failed")


def _retry_delay(error: grpc.RpcError) -> float | None:
    """The server's RetryInfo.retry_delay in seconds, if it sent one.

    Standard servers (the collector) put it in the google.rpc.Status of
    grpc-status-details-bin; the OpenTelemetry Python SDK also reads google.rpc.retryinfo-bin.
    """
    if status_pb2 is None:
        return None
    try:
        for key, value in error.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                for detail in status_pb2.Status.FromString(value).details:
                    if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                        info = error_details_pb2.RetryInfo()
                        detail.Unpack(info)
                        return info.retry_delay.ToNanoseconds() / 1e9
            elif key == "google.rpc.retryinfo-bin":
                return error_details_pb2.RetryInfo.FromString(value).retry_delay.ToNanoseconds() / 1e9
    except Exception:  # malformed details: fall back to our own backoff
        log.debug("could not read RetryInfo", exc_info=True)
    return None
