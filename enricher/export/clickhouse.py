"""A sink that writes spans into ClickHouse (a server or embedded chDB) itself, producing
the same rows as the stock collector's ClickHouse exporter (see clickhouse_rows).

Batches by size and time. An insert that fails is retried with backoff until it
succeeds; batches are acknowledged to the pipeline only after their insert, so the
pipeline's journal covers a crash, and a long outage fills this bounded queue, then the
journal, and then receivers push back.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque

from clickhouse_connect.driver.client import Client

from enricher.export.base import ExportBatch
from enricher.export.clickhouse_rows import COLUMNS, request_to_rows
from enricher.metrics import EnricherMetrics

log = logging.getLogger(__name__)


class ClickHouseWriter:
    def __init__(
        self,
        client: Client,
        *,
        database: str,
        table: str,
        metrics: EnricherMetrics,
        batch_spans: int = 20_000,
        flush_seconds: float = 0.5,
        max_queue_batches: int = 256,
        max_backoff: float = 30.0,
        name: str = "clickhouse",
    ) -> None:
        self.name = name
        self._client = client
        self._table = f"{database}.{table}"
        self._metrics = metrics
        self._batch_spans = batch_spans
        self._flush_seconds = flush_seconds
        self._max_queue = max_queue_batches
        self._max_backoff = max_backoff
        self._queue: deque[ExportBatch] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._stop_now = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)
        self._thread.start()

    # ---- SpanSink --------------------------------------------------------------------

    def submit(self, batch: ExportBatch, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._queue) >= self._max_queue and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._closed:
                return False
            self._queue.append(batch)
            self._metrics.queue_depth.labels(self.name).set(len(self._queue))
            self._cond.notify_all()
            return True

    def force_flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def shutdown(self, timeout: float) -> None:
        self.force_flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stop_now.set()
        self._thread.join(timeout=max(timeout, 1.0))

    # ---- the writer thread ---------------------------------------------------------------

    def _take(self) -> list[ExportBatch]:
        """Wait for a full batch, or for the oldest queued span to have waited flush_seconds."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return []
                self._cond.wait(0.1)
            first_seen = time.monotonic()
            while sum(b.span_count for b in self._queue) < self._batch_spans and not self._closed:
                remaining = first_seen + self._flush_seconds - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[ExportBatch] = []
            spans = 0
            while self._queue and (not taken or spans + self._queue[0].span_count <= self._batch_spans):
                batch = self._queue.popleft()
                taken.append(batch)
                spans += batch.span_count
            self._in_flight = len(taken)
            self._metrics.queue_depth.labels(self.name).set(len(self._queue))
            self._cond.notify_all()
            return taken

    def _run(self) -> None:
        while True:
            batches = self._take()
            if not batches:
                return
            try:
                rows: list[list] = []
                for batch in batches:
                    rows.extend(request_to_rows(batch.payload))
            except Exception:  # cannot happen for requests the receivers validated; never retry it
                log.exception("cannot convert %d batches to rows; they are counted as failed", len(batches))
                self._finish(batches, delivered=False)
                continue
            if self._insert(rows):
                self._finish(batches, delivered=True)
            else:
                self._abandon()  # shutting down: not acknowledged, so the journal replays them
                return

    def _insert(self, rows: list[list]) -> bool:
        backoff = 0.2
        while True:
            try:
                if rows:
                    self._client.insert(self._table, rows, column_names=COLUMNS)
                return True
            except Exception as error:
                self._metrics.export_retries.labels(self.name).inc()
                log.warning("insert of %d rows into %s failed (%s); retrying in %.1fs", len(rows), self._table, error, backoff)
                if self._stop_now.wait(backoff * (0.5 + random.random())):
                    return False
                backoff = min(backoff * 2, self._max_backoff)

    def _finish(self, batches: list[ExportBatch], *, delivered: bool) -> None:
        spans = sum(b.span_count for b in batches)
        if delivered:
            self._metrics.spans_forwarded.labels(self.name).inc(spans)
        else:
            self._metrics.spans_failed.labels(self.name).inc(spans)
        for batch in batches:
            batch.on_done(delivered)
        with self._cond:
            self._in_flight = 0
            self._cond.notify_all()

    def _abandon(self) -> None:
        with self._cond:
            self._in_flight = 0
            self._cond.notify_all()
