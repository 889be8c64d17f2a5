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

Run announcements: a span carrying ``agentmon.announce`` (sent by the registry API when a
run starts, with the run's own trace and span id and its agent's explicit identity) is
fed to the attributor, so the trace knows that span id's agent and the run's LLM calls
are stamped at once instead of waiting for the run's span, which only comes at its end.
An announcement is never delivered downstream nor stored: it counts as consumed, and a
record holding nothing else is committed at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from enricher.agents import AgentDirectory, AgentRef
from enricher.attribute import Decision, SpanRecord, TraceAttributor
from enricher.export.base import ExportBatch, SpanSink
from enricher.identify.rules import RuleSet, SpanView
from enricher.journal import Journal, JournalFull
from enricher.metrics import EnricherMetrics
from enricher.stamp import SpanContext, encode_request, existing_stamp, split_request, stamp_for

log = logging.getLogger(__name__)

# Downstream collectors take 4 MiB by default; stamped requests are split below that.
MAX_EXPORT_BYTES = 3 * 1024 * 1024

# A span carrying this attribute (the registry API sends "run") is a run announcement:
# learned from, never forwarded.
RUN_ANNOUNCE_KEY = "agentmon.announce"
_ANNOUNCE_MARKER = RUN_ANNOUNCE_KEY.encode()


class Overloaded(Exception):
    """The pipeline cannot take more now; the client should retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Tally:
    """What happened to the spans of one batch, counted before the metrics are touched."""

    __slots__ = ("passed", "stamped", "conflicts", "dropped")

    def __init__(self) -> None:
        self.passed = self.stamped = self.conflicts = self.dropped = 0


def _starts_run_of(record: SpanRecord, owner: AgentRef | None) -> bool:
    return record.run_root and owner is not None and record.agent is not None and record.agent.id == owner.id


class _Completion:
    """Calls ``done(parts)`` once every sink acknowledged every chunk of one logical batch."""

    __slots__ = ("_left", "_lock", "_parts", "_done")

    def __init__(self, count: int, parts: dict[int, int], done) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._parts = parts
        self._done = done

    def __call__(self, delivered: bool) -> None:
        del delivered  # a permanent rejection is final too: replaying would not help
        with self._lock:
            self._left -= 1
            finished = self._left == 0
        if finished:
            self._done(self._parts)


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
        max_export_bytes: int = MAX_EXPORT_BYTES,
    ) -> None:
        self._rules = rules
        self._directory = directory
        self._attributor = attributor
        self._sinks = sinks
        self._journal = journal
        self._metrics = metrics
        self._drop_unmonitored = drop_unmonitored
        self._commit_interval = commit_interval
        self._max_export_bytes = max_export_bytes
        self._slots = threading.BoundedSemaphore(max_waiting_requests)
        self._queue: queue.SimpleQueue[tuple[int, ExportTraceServiceRequest, bytes] | None] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        # Journal bookkeeping: parts of each record not yet delivered. Records are
        # processed in seq order, so the first key is the oldest outstanding one.
        self._outstanding: dict[int, int] = {}
        self._outstanding_lock = threading.Lock()
        self._last_processed = journal.last_committed
        self._last_commit = journal.last_committed
        # Records up to here were journaled before this start: the worker replays them first.
        self._replay_until = journal.last_appended
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
                self._queue.put((seq, request, payload))
        except JournalFull:
            self._slots.release()
            raise Overloaded("the ingest journal is full (downstream is slow or down)", retry_after=5.0) from None
        except (OSError, RuntimeError) as error:  # disk trouble, or closing: the client retries
            self._slots.release()
            log.error("cannot journal a request: %s", error)
            raise Overloaded("the ingest journal cannot be written", retry_after=5.0) from None
        except BaseException:
            self._slots.release()
            raise
        self._metrics.queue_depth.labels("journal_bytes").set(self._journal.pending_bytes)

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker; it replays the journal first, so receivers can start at once."""
        self._worker = threading.Thread(target=self._run, name="enricher-pipeline", daemon=True)
        self._worker.start()

    def replay(self) -> int:
        """Process what the journal held before this start. Returns the record count."""
        count = 0
        while not self._stopping.is_set():
            records = self._journal.read(256, timeout=0)
            for seq, payload in records:
                if seq > self._replay_until:
                    return count  # appended since this start: it comes through the queue
                try:
                    request = ExportTraceServiceRequest.FromString(payload)
                except Exception:  # it decoded once, so this is disk damage: skip it, loudly
                    log.error("skipping undecodable journal record %d", seq)
                    self._outstanding_record(seq, 0)
                    continue
                self._process_safely(seq, request, payload)
                count += 1
            if not records or records[-1][0] >= self._replay_until:
                break
        if count:
            log.info("replayed %d journal records", count)
        return count

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking requests, process what was accepted, deliver what can be in ``timeout``.
        Whatever is not delivered stays in the journal and is replayed at the next start."""
        self._stopping.set()
        self._queue.put(None)
        worker_done = True
        if self._worker is not None:
            self._worker.join(timeout=timeout)
            worker_done = not self._worker.is_alive()
        if worker_done:
            self._emit(self._attributor.release_all())
        else:
            log.warning("the pipeline worker is still busy; undelivered spans will be replayed at the next start")
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
        try:
            self.replay()
        except Exception:  # never fatal: unreplayed records stay in the journal
            log.exception("journal replay failed")
        next_commit = time.monotonic() + self._commit_interval
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                item = ()
            if item is None:
                break
            # Nothing may end this loop but shutdown: a dead worker would leave receivers
            # acknowledging requests that nobody processes.
            try:
                if item:
                    try:
                        self._process_safely(*item)
                    finally:
                        self._slots.release()
                self._emit(self._attributor.expire())
                if time.monotonic() >= next_commit:
                    self._commit()
                    next_commit = time.monotonic() + self._commit_interval
            except Exception:
                log.exception("pipeline worker error; carrying on")
                time.sleep(0.1)
        self._drain_queue()

    def _drain_queue(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item:
                self._process_safely(*item)
                self._slots.release()

    def _process_safely(self, seq: int, request: ExportTraceServiceRequest, payload: bytes) -> None:
        try:
            self._process(seq, request)
        except Exception:
            # Forward what was received, unstamped: an acknowledged span is never dropped.
            log.exception("could not enrich request %d; forwarding it as received", seq)
            if _ANNOUNCE_MARKER in payload:  # announcements are never forwarded, even here
                payload, span_count = _without_announcements(payload)
            else:
                span_count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with self._outstanding_lock:
                if span_count:
                    self._outstanding[seq] = self._outstanding.get(seq, 0) + 1
                self._last_processed = max(self._last_processed, seq)
            if span_count:
                self._deliver(payload, span_count, {seq: 1})

    def _process(self, seq: int, request: ExportTraceServiceRequest) -> None:
        rules, directory = self._rules, self._directory
        records: list[SpanRecord] = []
        span_total = 0
        announcements: list[tuple[object, int]] = []  # (scope_spans, index): removed, never delivered
        announced: set[int] = set()  # id() of the announcement records given to the attributor
        for resource_spans in request.resource_spans:
            resource_attrs = {kv.key: kv.value for kv in resource_spans.resource.attributes}
            resource_match = rules.identify_resource(resource_attrs)
            group = rules.group_key(resource_attrs) if rules.group_by else None
            for scope_spans in resource_spans.scope_spans:
                scope_name = scope_spans.scope.name
                for index, span in enumerate(scope_spans.spans):
                    attrs = {kv.key: kv.value for kv in span.attributes}
                    view = SpanView(attrs, resource_attrs, span.name, scope_name)
                    try:
                        found = rules.identify_span(view, resource_match)
                        from_resource = resource_match is not None and found is resource_match[1]
                        agent = directory.resolve(found) if found is not None else None
                        linked = rules.parent_trace_id(view)
                    except Exception:  # hostile attribute values: this span names no agent
                        log.warning("identity rules failed on span %r", span.name, exc_info=True)
                        agent, linked, from_resource = None, None, False
                    linked_trace = bytes.fromhex(linked) if linked else None
                    if linked_trace is None and span.links:
                        first = span.links[0].trace_id
                        linked_trace = first if self._attributor.knows(first) else None
                    record = SpanRecord(
                        span.trace_id,
                        span.span_id,
                        span.parent_span_id,
                        agent,
                        linked_trace,
                        group,
                        payload=(resource_spans, scope_spans, index, span, existing_stamp(attrs)),
                        agent_from_resource=from_resource,
                    )
                    if RUN_ANNOUNCE_KEY in attrs:  # the only per-span cost: one dict lookup
                        announcements.append((scope_spans, index))
                        if agent is None:
                            continue  # names no agent: nothing to learn
                        # Its own span id is one of its trace's agents, so the attributor always
                        # decides it at once (never holds it); it is dropped from "decided" below.
                        announced.add(id(record))
                    records.append(record)
                span_total += len(scope_spans.spans)
        if announcements:
            self._metrics.run_announcements.inc(len(announcements))
        self._metrics.spans_received.inc(span_total - len(announcements))

        decided, released = self._attributor.process(records)
        decided_ids = {id(record) for record, _ in decided}
        held = [record for record in records if id(record) not in decided_ids]
        # Held spans leave the request first, as self-contained bytes: nothing that follows
        # may leave the attributor holding a reference into this request.
        removed: dict[int, tuple[object, set[int]]] = {}  # scope_spans id -> (scope_spans, indexes)
        for scope_spans, index in announcements:
            removed.setdefault(id(scope_spans), (scope_spans, set()))[1].add(index)
        contexts: dict[int, SpanContext] = {}
        for record in held:
            resource_spans, scope_spans, index, span, existing = record.payload
            context = contexts.get(id(scope_spans))
            if context is None:
                context = contexts[id(scope_spans)] = SpanContext.of(resource_spans, scope_spans)
            record.payload = (seq, context, span.SerializeToString(), existing)
            removed.setdefault(id(scope_spans), (scope_spans, set()))[1].add(index)

        used: set[str] = set()
        tally = _Tally()
        for record, owner in decided:
            resource_spans, scope_spans, index, span, existing = record.payload
            record.payload = None
            if announced and id(record) in announced:
                continue  # learned from; already marked for removal
            stamp = self._stamp_decision(owner, existing, _starts_run_of(record, owner), tally, used)
            if stamp is None:
                removed.setdefault(id(scope_spans), (scope_spans, set()))[1].add(index)
            elif stamp:
                span.MergeFromString(stamp)
        self._count(tally)
        for scope_spans, indexes in removed.values():
            for index in sorted(indexes, reverse=True):
                del scope_spans.spans[index]

        remaining = span_total - sum(len(indexes) for _, indexes in removed.values())
        self._outstanding_record(seq, len(held) + (1 if remaining else 0))
        if remaining:
            self._deliver(request.SerializeToString(), remaining, {seq: 1})
        self._emit(released)
        directory.mark_used(used)

    def _stamp_decision(
        self, owner: AgentRef | None, existing, run_root: bool, tally: _Tally, used: set[str]
    ) -> bytes | None:
        """The bytes to append to a span for ``owner`` (b"" for none), or None to drop it."""
        if owner is None:
            tally.passed += 1
            return b""
        if not owner.monitored and self._drop_unmonitored:
            tally.dropped += 1
            return None
        used.add(owner.id)
        stamp = stamp_for(owner, existing)
        if stamp is None:
            tally.conflicts += 1  # the span names another agent id: kept as sent
            return b""
        tally.stamped += 1
        return stamp + owner.root_stamp if run_root else stamp

    def _count(self, tally: _Tally) -> None:
        # Once per batch, not per span: each Prometheus increment takes a lock.
        metrics = self._metrics
        if tally.passed:
            metrics.spans_passed_through.inc(tally.passed)
        if tally.stamped:
            metrics.spans_stamped.inc(tally.stamped)
        if tally.conflicts:
            metrics.agent_id_conflicts.inc(tally.conflicts)
        if tally.dropped:
            metrics.spans_dropped.labels("monitoring_off").inc(tally.dropped)

    def _emit(self, released: list[Decision]) -> None:
        """Send spans released from the hold buffer, stamped, as one batch."""
        if not released:
            return
        groups: dict[SpanContext, list[bytes]] = defaultdict(list)
        parts: dict[int, int] = defaultdict(int)
        dropped: dict[int, int] = defaultdict(int)
        used: set[str] = set()
        tally = _Tally()
        for record, owner in released:
            seq, context, span_bytes, existing = record.payload
            record.payload = None  # the FIFO may keep the record a while; not its bytes
            stamp = self._stamp_decision(owner, existing, _starts_run_of(record, owner), tally, used)
            if stamp is None:
                dropped[seq] += 1
                continue
            groups[context].append(span_bytes + stamp)
            parts[seq] += 1
        self._count(tally)
        if dropped:
            self._part_done(dict(dropped))
        if groups:
            self._deliver(encode_request(groups.items()), sum(len(s) for s in groups.values()), dict(parts))
        self._directory.mark_used(used)

    def _deliver(self, payload: bytes, span_count: int, parts: dict[int, int]) -> None:
        """Hand one logical batch to every sink, split to the downstream's size limit.
        ``parts`` are released from the journal bookkeeping once all of it is acknowledged."""
        chunks = split_request(payload, span_count, self._max_export_bytes)
        completion = _Completion(len(chunks) * len(self._sinks), parts, self._part_done)
        for chunk, count in chunks:
            for sink in self._sinks:
                batch = ExportBatch(chunk, count, completion)
                while not sink.submit(batch, timeout=1.0):
                    # The sink is full: wait (receivers push back meanwhile). When stopping,
                    # give up: the journal replays these spans at the next start.
                    if self._stopping.is_set():
                        return

    # ---- journal bookkeeping ---------------------------------------------------------------

    def _outstanding_record(self, seq: int, parts: int) -> None:
        with self._outstanding_lock:
            if parts:
                self._outstanding[seq] = parts
            self._last_processed = seq

    def _part_done(self, parts: dict[int, int]) -> None:
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
                upto = next(iter(self._outstanding)) - 1  # seq order: the first is the oldest
            else:
                upto = self._last_processed
        if upto > self._last_commit:
            self._journal.commit(upto)
            self._last_commit = upto
        self._metrics.queue_depth.labels("journal_bytes").set(self._journal.pending_bytes)


def _without_announcements(payload: bytes) -> tuple[bytes, int]:
    """``payload`` without its run announcements, and the count of the spans left (error path only)."""
    request = ExportTraceServiceRequest.FromString(payload)
    count = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            kept = [span for span in scope_spans.spans
                    if not any(kv.key == RUN_ANNOUNCE_KEY for kv in span.attributes)]
            if len(kept) != len(scope_spans.spans):
                del scope_spans.spans[:]
                scope_spans.spans.extend(kept)
            count += len(kept)
    return request.SerializeToString(), count
