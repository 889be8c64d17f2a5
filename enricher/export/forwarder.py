"""The delivery loop shared by the OTLP forwarders: a bounded queue, sender threads, retries.

Modelled on the OpenTelemetry SDK's OTLP exporters (small classes, explicit flush and
shutdown), with two differences that the pipeline needs:

* it never gives up on a transient failure: batches stay un-acknowledged and are retried
  (backoff capped at ``max_backoff``) until the collector takes them, and shutdown leaves
  the undelivered ones un-acknowledged so that the pipeline replays them from its journal;
* it never re-encodes: queued payloads are serialized ``ExportTraceServiceRequest``s,
  concatenated into one request (protobuf merges repeated fields) and sent as raw bytes.

A subclass says how one request goes over its protocol (``_attempt``) and how to drop its
connections (``_close``); what an answer means for the batches is decided here, once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass

from enricher.export.base import ExportBatch
from enricher.metrics import EnricherMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attempt:
    """How the collector answered one request.

    ``accepted``: it took the request (``rejected`` of its spans were refused inside it, as
    OTLP's partial_success says); ``retry``: a transient failure, try the same bytes again
    after ``retry_after`` seconds when the server said so; ``refused``: a permanent failure.
    ``reason`` is for the log.
    """

    outcome: str  # "accepted" | "retry" | "refused"
    reason: str = ""
    rejected: int = 0
    retry_after: float | None = None


ACCEPTED = Attempt("accepted")


class QueuedForwarder:
    """A SpanSink that delivers batches to a collector over ``_attempt`` (see the subclasses)."""

    def __init__(
        self,
        endpoint: str,
        *,
        metrics: EnricherMetrics,
        max_queue_batches: int,
        max_request_bytes: int,
        max_in_flight: int,
        initial_backoff: float,
        max_backoff: float,
        name: str,
    ) -> None:
        if max_queue_batches < 1 or max_in_flight < 1 or max_request_bytes < 1:
            raise ValueError("max_queue_batches, max_in_flight and max_request_bytes must be at least 1")
        self.name = name
        self._endpoint = endpoint
        self._max_queue = max_queue_batches
        self._max_request_bytes = max_request_bytes
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff

        self._forwarded = metrics.spans_forwarded.labels(sink=name)
        self._failed = metrics.spans_failed.labels(sink=name)
        self._retries = metrics.export_retries.labels(sink=name)
        self._depth = metrics.queue_depth.labels(queue=name)
        self._depth.set(0)

        self._cond = threading.Condition()
        self._queue: deque[ExportBatch] = deque()
        self._in_flight = 0  # batches taken off the queue and not finished yet
        self._finishing = 0  # senders calling on_done right now (see _finish)
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

    def _start_senders(self) -> None:
        """Called by a subclass once it can send."""
        for thread in self._threads:
            thread.start()

    # ---- what a protocol provides ---------------------------------------------------
    def _attempt(self, payload: bytes) -> Attempt:
        """Send ``payload`` once. Exceptions count as transient failures."""
        raise NotImplementedError

    def _close(self) -> None:
        """Drop connections; requests still in flight must fail promptly."""
        raise NotImplementedError

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
        with self._cond:
            self._stopped.set()
            # Not acknowledged on purpose: the pipeline still has them in its journal.
            self._queue.clear()
            self._depth.set(0)
            self._cond.notify_all()
            # Acknowledgements already under way finish first (they only touch memory): none
            # may come after shutdown returns.
            self._cond.wait_for(lambda: self._finishing == 0, timeout=max(1.0, deadline - time.monotonic()))
        with self._recovery:
            self._recovery.notify_all()
        # Closing cuts requests still in flight; their senders see _stopped and drop the
        # batches without on_done.
        self._close()
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
        """Send ``batches`` as one request until it is accepted or refused for good, or until
        shutdown (then return without acknowledging anything)."""
        payload = b"".join(batch.payload for batch in batches)
        spans = sum(batch.span_count for batch in batches)
        attempt = 0
        while not self._stopped.is_set():
            # Noted before the attempt: a recovery by another sender during it must still
            # cut this sender's backoff short.
            recoveries = self._recoveries
            try:
                answer = self._attempt(payload)
            except Exception as error:  # e.g. a connection refused, or closed by shutdown
                answer = Attempt("retry", repr(error))
            if self._stopped.is_set():
                return  # shutdown has begun: the journal replays these batches
            if answer.outcome == "retry":
                self._retries.inc()
                if not self._failing:
                    self._failing = True
                    log.warning("%s: export to %s failed (%s); retrying", self.name, self._endpoint, answer.reason)
                # Honour the server's hint, within bounds: a bogus one must neither stall us nor
                # (0, or a date in the past) make us resend as fast as the wire allows.
                delay = self._backoff(attempt)
                if answer.retry_after is not None:
                    delay = min(max(answer.retry_after, delay), self._max_backoff)
                self._pause(delay, recoveries)
                attempt += 1
                continue
            if answer.outcome == "refused":
                if len(batches) > 1:
                    # Coalescing must not widen a refusal: resend each batch alone so that
                    # only the ones the collector really refuses are failed.
                    for batch in batches:
                        self._deliver([batch])
                    return
                log.error("%s: %s refused %d spans permanently (%s)", self.name, self._endpoint, spans, answer.reason)
                self._failed.inc(spans)
                self._finish(batches, False)
                return
            if self._failing:
                self._failing = False
                log.info("%s: export to %s works again", self.name, self._endpoint)
                with self._recovery:
                    self._recoveries += 1
                    self._recovery.notify_all()
            rejected = min(answer.rejected, spans)
            if rejected:
                # Accepted as a request: retrying the same spans would be rejected again.
                log.warning("%s: %s rejected %d of %d spans: %s", self.name, self._endpoint, rejected, spans,
                            answer.reason)
                self._failed.inc(rejected)
            self._forwarded.inc(spans - rejected)
            self._finish(batches, True)
            return

    def _finish(self, batches: list[ExportBatch], delivered: bool) -> None:
        """Acknowledge ``batches``, unless shutdown has begun: then the journal replays them.
        Shutdown waits for acknowledgements under way, so none comes after it returns."""
        with self._cond:
            if self._stopped.is_set():
                return
            self._finishing += 1
        try:
            for batch in batches:
                try:
                    batch.on_done(delivered)
                except Exception:  # a broken callback must not kill the sender or skip the others
                    log.exception("on_done callback failed")
        finally:
            with self._cond:
                self._finishing -= 1
                self._cond.notify_all()

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

