"""The enricher's pipeline: receive -> identify -> attribute -> stamp -> export.

Receivers call ``submit``: the request is appended to the disk journal and handed to
one worker thread before the client is answered, so an acknowledged span survives a
crash (the journal is replayed at start). The worker identifies agents, attributes
spans to them, stamps them and hands batches to the sinks. A journal record is
committed once every span that came from it is delivered (or dropped on purpose), so
spans still held for attribution are replayed after a crash too: at-least-once.

Backpressure: a bounded number of requests may wait for the worker and the journal has
a byte budget; beyond either, ``submit`` raises ``Overloaded`` and receivers answer
RESOURCE_EXHAUSTED / 429 so that clients retry later.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from functools import partial

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from enricher.agents import AgentDirectory, AgentRef
from enricher.attribute import Decision, SpanRecord, TraceAttributor
from enricher.export.base import ExportBatch, SpanSink
from enricher.identify.rules import RuleSet, SpanView
from enricher.journal import Journal, JournalFull
from enricher.metrics import EnricherMetrics
from enricher.stamp import SpanContext, encode_request, stamp_for

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The pipeline cannot take more now; the client should retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Pipeline:
    def __init__(
        self,
        *,
        rules: RuleSet,
        directory: AgentDirectory,
        attributor: TraceAttributor,
        sinks: list[SpanSink],
        journal: Journal,
        metrics: EnricherMetrics,
        drop_unmonitored: bool = True,
        max_waiting_requests: int = 64,
        commit_interval: float = 0.2,
    ) -> None:
        self._rules = rules
        self._directory = directory
        self._attributor = attributor
        self._sinks = sinks
        self._journal = journal
        self._metrics = metrics
        self._drop_unmonitored = drop_unmonitored
        self._commit_interval = commit_interval
        self._slots = threading.BoundedSemaphore(max_waiting_requests)
        self._queue: queue.SimpleQueue[tuple[int, ExportTraceServiceRequest] | None] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        # Journal bookkeeping: parts of each record not yet delivered. Records are
        # processed in seq order, so the first key is the oldest outstanding one.
        self._outstanding: dict[int, int] = {}
        self._outstanding_lock = threading.Lock()
        self._last_processed = journal.last_committed
        self._last_commit = journal.last_committed
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()

    # ---- receiving (any thread) -----------------------------------------------------

    def submit(self, request: ExportTraceServiceRequest, payload: bytes) -> None:
        """Accept a decoded request (``payload`` is its serialized form) or raise Overloaded."""
        if self._stopping.is_set():
            raise Overloaded("shutting down", retry_after=5.0)
        if not self._slots.acquire(blocking=False):
            raise Overloaded("too many requests waiting to be processed")
        try:
            # One lock keeps journal order and processing order the same (see commit).
            with self._submit_lock:
                seq = self._journal.append(payload)
                self._queue.put((seq, request))
        except JournalFull:
            self._slots.release()
            raise Overloaded("the ingest journal is full (downstream is slow or down)", retry_after=5.0) from None
        self._metrics.queue_depth.labels("journal_bytes").set(self._journal.pending_bytes)

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.replay()
        self._worker = threading.Thread(target=self._run, name="enricher-pipeline", daemon=True)
        self._worker.start()

    def replay(self) -> int:
        """Process what the journal holds from before a restart. Returns the record count."""
        count = 0
        while True:
            records = self._journal.read(256, timeout=0)
            if not records:
                return count
            for seq, payload in records:
                try:
                    request = ExportTraceServiceRequest.FromString(payload)
                except Exception:  # a record that never decodes would block the journal forever
                    log.error("skipping undecodable journal record %d", seq)
                    self._outstanding_record(seq, 0)
                    continue
                self._process(seq, request)
                count += 1
            if count:
                log.info("replayed %d journal records", count)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking requests, process what was accepted, deliver what can be in ``timeout``."""
        self._stopping.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=timeout)
        self._emit(self._attributor.release_all())
        deadline = time.monotonic() + timeout
        for sink in self._sinks:
            sink.force_flush(max(0.1, deadline - time.monotonic()))
        self._commit()
        for sink in self._sinks:
            sink.shutdown(max(0.1, deadline - time.monotonic()))
        self._commit()
        self._journal.close()

    # ---- the worker ----------------------------------------------------------------------

    def _run(self) -> None:
        next_commit = time.monotonic() + self._commit_interval
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                item = ()
            if item is None:
                break
            if item:
                seq, request = item
                try:
                    self._process(seq, request)
                except Exception:  # a bug must not stop the pipeline; the record is replayed on restart
                    log.exception("failed to process request %d", seq)
                finally:
                    self._slots.release()
            self._emit(self._attributor.expire())
            if time.monotonic() >= next_commit:
                self._commit()
                next_commit = time.monotonic() + self._commit_interval
        self._drain_queue()

    def _drain_queue(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item:
                self._process(*item)
                self._slots.release()

    def _process(self, seq: int, request: ExportTraceServiceRequest) -> None:
        rules, directory = self._rules, self._directory
        records: list[SpanRecord] = []
        span_total = 0
        for resource_spans in request.resource_spans:
            resource_attrs = {kv.key: kv.value for kv in resource_spans.resource.attributes}
            resource_match = rules.identify_resource(resource_attrs)
            group = rules.group_key(resource_attrs) if rules.group_by else None
            for scope_spans in resource_spans.scope_spans:
                scope_name = scope_spans.scope.name
                for index, span in enumerate(scope_spans.spans):
                    attrs = {kv.key: kv.value for kv in span.attributes}
                    view = SpanView(attrs, resource_attrs, span.name, scope_name)
                    found = rules.identify_span(view, resource_match)
                    agent = directory.resolve(found) if found is not None else None
                    linked = rules.parent_trace_id(view)
                    linked_trace = bytes.fromhex(linked) if linked else None
                    if linked_trace is None and span.links:
                        first = span.links[0].trace_id
                        linked_trace = first if self._attributor.knows(first) else None
                    records.append(
                        SpanRecord(
                            span.trace_id,
                            span.span_id,
                            span.parent_span_id,
                            agent,
                            linked_trace,
                            group,
                            payload=(resource_spans, scope_spans, index, span, attrs),
                        )
                    )
                span_total += len(scope_spans.spans)
        self._metrics.spans_received.inc(span_total)

        decided, released = self._attributor.process(records)
        decided_ids = {id(record) for record, _ in decided}
        held = [record for record in records if id(record) not in decided_ids]

        used: set[str] = set()
        removed: dict[int, tuple[object, set[int]]] = {}  # scope_spans id -> (scope_spans, indexes)
        for record, owner in decided:
            resource_spans, scope_spans, index, span, attrs = record.payload
            if not self._stamp_in_place(span, attrs, owner, used):
                removed.setdefault(id(scope_spans), (scope_spans, set()))[1].add(index)
        contexts: dict[int, SpanContext] = {}
        for record in held:
            resource_spans, scope_spans, index, span, attrs = record.payload
            context = contexts.get(id(scope_spans))
            if context is None:
                context = contexts[id(scope_spans)] = SpanContext.of(resource_spans, scope_spans)
            record.payload = (seq, context, span.SerializeToString(), attrs)
            removed.setdefault(id(scope_spans), (scope_spans, set()))[1].add(index)
        for scope_spans, indexes in removed.values():
            for index in sorted(indexes, reverse=True):
                del scope_spans.spans[index]

        remaining = span_total - sum(len(indexes) for _, indexes in removed.values())
        parts = len(held) * len(self._sinks) + (len(self._sinks) if remaining else 0)
        self._outstanding_record(seq, parts)
        if remaining:
            self._send(request.SerializeToString(), remaining, {seq: 1})
        self._emit(released)
        directory.mark_used(used)

    def _stamp_in_place(self, span, attrs, owner: AgentRef | None, used: set[str]) -> bool:
        """Stamp a span that is still inside its request. False if it is to be dropped."""
        if owner is None:
            self._metrics.spans_passed_through.inc()
            return True
        if not owner.monitored and self._drop_unmonitored:
            self._metrics.spans_dropped.labels("monitoring_off").inc()
            return False
        stamp = stamp_for(owner, attrs)
        if stamp is None:
            self._metrics.agent_id_conflicts.inc()
        else:
            span.MergeFromString(stamp)
            self._metrics.spans_stamped.inc()
        used.add(owner.id)
        return True

    def _emit(self, released: list[Decision]) -> None:
        """Send spans released from the hold buffer, stamped, as one batch."""
        if not released:
            return
        groups: dict[SpanContext, list[bytes]] = defaultdict(list)
        parts: dict[int, int] = defaultdict(int)
        dropped: dict[int, int] = defaultdict(int)
        used: set[str] = set()
        for record, owner in released:
            seq, context, span_bytes, attrs = record.payload
            if owner is not None and not owner.monitored and self._drop_unmonitored:
                self._metrics.spans_dropped.labels("monitoring_off").inc()
                dropped[seq] += 1
                continue
            if owner is None:
                self._metrics.spans_passed_through.inc()
            else:
                stamp = stamp_for(owner, attrs)
                if stamp is None:
                    self._metrics.agent_id_conflicts.inc()
                else:
                    span_bytes += stamp
                    self._metrics.spans_stamped.inc()
                used.add(owner.id)
            groups[context].append(span_bytes)
            parts[seq] += 1
        for seq, count in dropped.items():
            self._part_done({seq: count * len(self._sinks)}, True)
        if groups:
            self._send(encode_request(groups.items()), sum(len(s) for s in groups.values()), dict(parts))
        self._directory.mark_used(used)

    def _send(self, payload: bytes, span_count: int, parts: dict[int, int]) -> None:
        for sink in self._sinks:
            batch = ExportBatch(payload, span_count, partial(self._part_done, parts))
            while not sink.submit(batch, timeout=1.0):
                # The sink is full: wait (receivers push back meanwhile), unless shutting down
                # for good, in which case the journal replays these spans at the next start.
                if self._stopping.is_set() and self._worker is not threading.current_thread():
                    return

    # ---- journal bookkeeping ---------------------------------------------------------------

    def _outstanding_record(self, seq: int, parts: int) -> None:
        with self._outstanding_lock:
            if parts:
                self._outstanding[seq] = parts
            self._last_processed = seq

    def _part_done(self, parts: dict[int, int], delivered: bool) -> None:
        del delivered  # a permanent rejection is final too: replaying would not help
        with self._outstanding_lock:
            for seq, count in parts.items():
                left = self._outstanding.get(seq)
                if left is None:
                    continue
                left -= count
                if left <= 0:
                    del self._outstanding[seq]
                else:
                    self._outstanding[seq] = left

    def _commit(self) -> None:
        with self._outstanding_lock:
            if self._outstanding:
                upto = min(self._outstanding) - 1
            else:
                upto = self._last_processed
        if upto > self._last_commit:
            self._journal.commit(upto)
            self._last_commit = upto
        self._metrics.queue_depth.labels("journal_bytes").set(self._journal.pending_bytes)
