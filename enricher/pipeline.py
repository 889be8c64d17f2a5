"""The enricher's pipeline: receive -> (identify -> attribute -> stamp) -> export.

Receivers call ``submit``: the request is appended to the disk journal and queued for one
worker thread before the client is answered, so an acknowledged span survives a crash (the
journal is replayed at start). The worker hands each request to the processor, which
identifies, attributes and stamps (``enrichment.Enrichment``), and the processor's outputs
come back here: ``deliver`` hands stamped spans to the sinks, and a journal record is
committed once every part of it is settled (delivered, or dropped on purpose). Spans still held
for attribution are parts too, so they are replayed after a crash: at-least-once.

The commit cursor is one position, so a record with a span held for its agent keeps itself and
every later record in the journal for up to the hold time. Once the journal is a quarter full
and its oldest record waits for held spans, the processor carries those spans forward:
writes them to the journal again, alone (a few KB where the requests were MBs), which settles
their parts of the old records so that the cursor moves on.

Backpressure: a bounded number of requests may wait for the worker and the journal has
a byte budget; beyond either, ``submit`` raises ``Overloaded`` and receivers answer
RESOURCE_EXHAUSTED / 429 so that clients retry later.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Protocol

from enricher.export.base import ExportBatch, SpanSink
from enricher.journal import Journal, JournalFull
from enricher.metrics import EnricherMetrics
from enricher.receive.scan import RequestScanner, ScannedRequest
from enricher.stamp import split_request

log = logging.getLogger(__name__)

# Downstream collectors take 4 MiB by default; stamped requests are split below that.
MAX_EXPORT_BYTES = 3 * 1024 * 1024
# Held spans are carried forward once the journal holds this share of its budget ...
CARRY_FORWARD_AT = 0.25
# ... at most this often (seconds): each time rewrites every held span.
CARRY_FORWARD_INTERVAL = 0.5
CARRY_RECORD_MIN_BYTES = 256 * 1024


class Processor(Protocol):
    """Identifies, attributes and stamps; reports to the pipeline (``enrichment.Outputs``)."""

    def start(self, outputs) -> None: ...

    def process(self, seq: int, scanned: ScannedRequest) -> None: ...

    def expire(self) -> None: ...

    def release_all(self) -> None: ...

    def held_from(self, seq: int) -> int: ...

    def carry_forward(self, upto: int, max_record_bytes: int) -> int: ...


class Overloaded(Exception):
    """The pipeline cannot take more now; the client should retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


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
        processor: Processor,
        *,
        scanner: RequestScanner,
        sinks: list[SpanSink],
        journal: Journal,
        metrics: EnricherMetrics,
        max_waiting_requests: int = 64,
        max_waiting_spans: int = 262_144,
        commit_interval: float = 0.2,
        max_export_bytes: int = MAX_EXPORT_BYTES,
    ) -> None:
        self._processor = processor
        # What receivers scan requests with before submitting them (and replay, here).
        self.scanner = scanner
        self._sinks = sinks
        self._journal = journal
        self._metrics = metrics
        self._commit_interval = commit_interval
        self._max_export_bytes = max_export_bytes
        self._slots = threading.BoundedSemaphore(max_waiting_requests)
        # Requests waiting for the worker are held scanned (ids and positions per span, a few
        # hundred bytes a span besides the payload): big requests are bounded by their spans too.
        self._max_waiting_spans = max_waiting_spans
        self._waiting_spans = 0
        self._waiting_lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[int, ScannedRequest] | None] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        # Journal bookkeeping: parts of each record not yet settled (see _commit).
        self._outstanding: dict[int, int] = {}
        self._outstanding_lock = threading.Lock()
        self._carried_ahead: set[int] = set()  # carried-forward records past _last_processed
        self._last_processed = journal.last_committed
        self._last_commit = journal.last_committed
        # Records up to here were journaled before this start: the worker replays them first.
        self._replay_until = journal.last_appended
        self._next_carry = 0.0
        self._last_carry_bytes = 0
        self._unpinnable = -1  # an oldest record found without held spans: carrying cannot free it
        # Carried spans go in records of at most this size: each needs that much room in the
        # budget before the records it relieves are committed; and each write costs the
        # worker a wait for the GIL, so a big budget gets big records.
        self._carry_record_bytes = max(CARRY_RECORD_MIN_BYTES, journal.max_bytes // 16)
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()

    # ---- receiving (any thread) -----------------------------------------------------

    def submit(self, scanned: ScannedRequest) -> None:
        """Accept a request that ``self.scanner`` scanned, or raise Overloaded."""
        if self._stopping.is_set():
            raise Overloaded("shutting down", retry_after=5.0)
        self._take_slot(scanned.span_count)
        try:
            # The checksum releases the GIL: computed before the lock, not while holding it.
            header = self._journal.frame_header(scanned.payload)
            # One lock keeps journal order and processing order the same (see commit).
            with self._submit_lock:
                seq = self._journal.append(scanned.payload, header)
                self._queue.put((seq, scanned))
        except JournalFull:
            self._release_slot(scanned.span_count)
            # Downstream is slow or down, or the spans held for their agent take half the journal
            # (below that they are carried forward: _carry_forward_if_pinned).
            raise Overloaded("the ingest journal is full (downstream is slow or down, or too many spans are "
                             "held for their agent)", retry_after=5.0) from None
        except (OSError, RuntimeError) as error:  # disk trouble, or closing: the client retries
            self._release_slot(scanned.span_count)
            log.error("cannot journal a request: %s", error)
            raise Overloaded("the ingest journal cannot be written", retry_after=5.0) from None
        except BaseException:
            self._release_slot(scanned.span_count)
            raise
        self._metrics.queue_depth.labels("journal_bytes").set(self._journal.pending_bytes)

    def _take_slot(self, spans: int) -> None:
        if not self._slots.acquire(blocking=False):
            raise Overloaded("too many requests waiting to be processed")
        with self._waiting_lock:
            # A request bigger than the budget is taken when nothing else waits.
            if self._waiting_spans and self._waiting_spans + spans > self._max_waiting_spans:
                self._slots.release()
                raise Overloaded("too many spans waiting to be processed")
            self._waiting_spans += spans

    def _release_slot(self, spans: int) -> None:
        with self._waiting_lock:
            self._waiting_spans -= spans
        self._slots.release()

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the processor and the worker; the worker replays the journal first, so
        receivers can start at once."""
        self._processor.start(self)
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
                    scanned = self.scanner.scan(payload)
                except Exception:  # it was valid once, so this is disk damage: skip it, loudly
                    log.error("skipping undecodable journal record %d", seq)
                    self.opened(seq, 0)
                    continue
                self._processor.process(seq, scanned)
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
            try:
                self._processor.release_all()
            except Exception:  # held spans stay in the journal
                log.exception("could not release the held spans")
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
                        self._processor.process(*item)
                    finally:
                        self._release_slot(item[1].span_count)
                self._processor.expire()
                if time.monotonic() >= next_commit:
                    try:
                        self._carry_forward_if_pinned()
                    except Exception:  # commits go on without it
                        log.exception("could not carry held spans forward")
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
                self._processor.process(*item)
                self._release_slot(item[1].span_count)

    # ---- the processor's outputs (enrichment.Outputs) ---------------------------------------

    def deliver(self, payload: bytes, span_count: int, parts: dict[int, int]) -> None:
        """Hand one logical batch to every sink, split to the downstream's size limit.
        ``parts`` are settled once all of it is acknowledged."""
        chunks = split_request(payload, span_count, self._max_export_bytes)
        completion = _Completion(len(chunks) * len(self._sinks), parts, self.settled)
        for chunk, count in chunks:
            for sink in self._sinks:
                batch = ExportBatch(chunk, count, completion)
                while not sink.submit(batch, timeout=1.0):
                    # The sink is full: wait (receivers push back meanwhile). When stopping,
                    # give up: the journal replays these spans at the next start.
                    if self._stopping.is_set():
                        return

    def carry(self, payload: bytes, span_count: int, parts: dict[int, int]) -> int | None:
        """Journal held spans again as a record of their own, which then has one part per span,
        and settle the ``parts`` of the records they came from. Returns the new record's seq,
        or None when the journal cannot take it now (nothing changes then)."""
        header = self._journal.frame_header(payload)
        for attempt in range(2):
            try:
                with self._submit_lock:
                    seq = self._journal.append(payload, header)
                break
            except JournalFull as error:
                if attempt:
                    log.debug("cannot carry held spans forward now: %s", error)
                    return None
                # The records that earlier carries of this round relieved make room once committed.
                self._commit()
            except (OSError, RuntimeError, ValueError) as error:
                log.debug("cannot carry held spans forward now: %s", error)
                return None
        with self._outstanding_lock:
            self._outstanding[seq] = span_count
            # Requests journaled before it may still wait in the queue: it counts as processed
            # once they are, so that the commit cursor never passes one of them.
            self._carried_ahead.add(seq)
            self._mark_processed(self._last_processed)
        self.settled(parts)
        return seq

    def opened(self, seq: int, parts: int) -> None:
        with self._outstanding_lock:
            if parts:
                self._outstanding[seq] = self._outstanding.get(seq, 0) + parts
            self._mark_processed(seq)

    def _mark_processed(self, seq: int) -> None:
        """Record ``seq`` is processed (the caller holds the lock): ``_last_processed`` moves to
        it, and on over the carried-forward records that follow it without a gap."""
        processed = max(self._last_processed, seq)
        ahead = self._carried_ahead
        if ahead:
            while processed + 1 in ahead:
                processed += 1
            ahead.difference_update([carried for carried in ahead if carried <= processed])
        self._last_processed = processed

    def settled(self, parts: dict[int, int]) -> None:
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

    # ---- journal bookkeeping ---------------------------------------------------------------

    def _carry_forward_if_pinned(self) -> None:
        """Past a quarter of the journal's budget, have the held spans carried forward (see the
        module's docstring), when that can free the oldest record:

        - only if some of its spans are held: otherwise deliveries keep it (downstream slow or
          down), and moving spans would free nothing. A carry leaves it no held span, so while
          downstream is down at most one carry frees nothing, and the held spans are not even
          looked at again until the oldest record changes.
        - only once the journal holds twice what the last carry wrote (each carry rewrites
          every held span): carrying never writes more than it frees."""
        now = time.monotonic()
        budget = self._journal.max_bytes
        # Capped at half the budget: one big carry must not switch carrying off for good.
        if now < self._next_carry or self._journal.pending_bytes < max(
            budget * CARRY_FORWARD_AT, min(2 * self._last_carry_bytes, budget / 2)
        ):
            return
        with self._outstanding_lock:
            if not self._outstanding:
                return
            oldest = min(self._outstanding)
            upto = self._last_processed
        if oldest == self._unpinnable or not self._processor.held_from(oldest):
            # A record never gets held spans back once it has none: no need to ask again.
            self._unpinnable = oldest
            return
        journaled = self._processor.carry_forward(upto, self._carry_record_bytes)
        if journaled:
            self._last_carry_bytes = journaled
            self._next_carry = now + CARRY_FORWARD_INTERVAL

    def _commit(self) -> None:
        with self._outstanding_lock:
            # Records are opened in seq order, but carried-forward ones come later with higher
            # seqs: the cursor stops before the oldest outstanding and at the last processed.
            upto = self._last_processed
            if self._outstanding:
                upto = min(upto, min(self._outstanding) - 1)
        if upto > self._last_commit:
            self._journal.commit(upto)
            self._last_commit = upto
        self._metrics.queue_depth.labels("journal_bytes").set(self._journal.pending_bytes)
