"""Runs reported through the API: start, end, expiry, re-announcement, shutdown.

Start opens a run in the table and sends its announcement; it answers only once the
enricher took it, so the LLM calls a client makes afterwards (children of the returned
traceparent) are always processed after it and attributed at once. End sends the run's
span; if the enricher cannot take it the run stays open and the client may retry.

A background thread (the reaper) closes runs not ended within ``max_seconds`` as error
spans, and re-sends the announcement of every open run each ``announce_every`` seconds:
the enricher forgets a trace that has been quiet for its trace TTL (120 s by default)
and everything at a restart, so a long run with long silences stays known.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from registry_api.runs.exporter import EnricherRejected, EnricherUnavailable, OtlpRunExporter
from registry_api.runs.spans import (
    RunAgent,
    announcement_span,
    new_span_id,
    new_trace_id,
    run_span,
    traceparent,
)
from registry_api.runs.table import ClosedRun, OpenRun, RunTable

log = logging.getLogger(__name__)

ANNOUNCE_EVERY_SECONDS = 30.0  # well inside the enricher's 120 s trace TTL


@dataclass(frozen=True, slots=True)
class StartedRun:
    trace_id: str
    span_id: str
    traceparent: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class EndedRun:
    trace_id: str
    span_id: str
    duration_ms: float
    status: str


class RunService:
    def __init__(
        self,
        exporter: OtlpRunExporter,
        *,
        max_open: int,
        max_seconds: float,
        max_closed: int = 20_000,
        announce_every: float = ANNOUNCE_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.exporter = exporter
        self.table = RunTable(max_open=max_open, max_closed=max_closed)
        self.max_seconds = max_seconds
        self._announce_every = announce_every
        self._clock = clock
        self._wall_ns = wall_ns
        self._tick = min(1.0, max(0.01, max_seconds / 10), announce_every / 2)
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._failing = False  # the last expiry could not be sent (log an outage once)

    # ---- the API's calls (any thread) ------------------------------------------------

    def start(
        self,
        agent: RunAgent,
        *,
        input_text: str | None = None,
        attributes: dict[str, Any] | None = None,
        parent: tuple[bytes, bytes] | None = None,
    ) -> StartedRun:
        """Open a run and announce it. Raises TooManyRuns, EnricherUnavailable, EnricherRejected."""
        start_ns, now = self._wall_ns(), self._clock()
        while True:
            trace_id, parent_span_id = parent if parent is not None else (new_trace_id(), b"")
            run = OpenRun(
                agent=agent, trace_id=trace_id, span_id=new_span_id(), parent_span_id=parent_span_id,
                start_ns=start_ns, started=now, deadline=now + self.max_seconds, input_text=input_text,
                attributes=dict(attributes or {}), announced=now,
            )
            if self.table.add(run):
                break
        try:
            self.exporter.send([announcement_span(agent, run.trace_id, run.span_id, run.parent_span_id, start_ns)])
        except BaseException:
            self.table.discard(run.key)
            raise
        expires_at = datetime.fromtimestamp(start_ns / 1e9 + self.max_seconds, tz=UTC)
        return StartedRun(run.trace_id.hex(), run.span_id.hex(), traceparent(run.trace_id, run.span_id), expires_at)

    def end(
        self,
        agent_id: str,
        trace_id: bytes,
        span_id: bytes,
        *,
        output_text: str | None = None,
        error: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> EndedRun:
        """Close a run with its span. Raises RunNotFound, RunClosed, RunOfAnotherAgent, RunBusy,
        EnricherUnavailable or EnricherRejected (in the last two the run stays open)."""
        run = self.table.claim((trace_id, span_id), agent_id)
        try:
            closed = self._close(run, output_text=output_text, error=error, extra=attributes)
        except BaseException:
            self.table.release(run)
            raise
        return EndedRun(trace_id.hex(), span_id.hex(), closed.duration_ms, closed.status)

    # ---- background ----------------------------------------------------------------------

    def reap(self) -> None:
        """One pass: close the runs past their deadline, re-announce the quiet ones."""
        now = self._clock()
        due = self.table.claim_due(now)
        if due:
            message = f"run not ended within {self.max_seconds:g} s"
            spans, results = [], []
            for run in due:
                span, closed = self._closing_span(run, None, message, "run_expired", None, expired=True)
                spans.append(span)
                results.append((run, closed))
            try:
                self.exporter.send(spans)
            except EnricherUnavailable as error:
                # Once per outage, not once per tick.
                (log.debug if self._failing else log.warning)("cannot close %d expired runs yet: %s", len(due), error)
                self._failing = True
                for run in due:
                    self.table.release(run)
            except EnricherRejected as error:  # retrying cannot help: close them anyway
                log.error("the enricher refused %d expired runs; they are closed unrecorded: %s", len(due), error)
                for run, closed in results:
                    self.table.close(run, closed)
            else:
                self._failing = False
                for run, closed in results:
                    self.table.close(run, closed)
        stale = self.table.stale_announcements(now, self._announce_every)
        if stale:
            try:
                self.exporter.send([
                    announcement_span(run.agent, run.trace_id, run.span_id, run.parent_span_id, run.start_ns)
                    for run in stale
                ])
            except (EnricherUnavailable, EnricherRejected) as error:
                log.debug("cannot re-announce %d runs now: %s", len(stale), error)
            else:
                for run in stale:
                    run.announced = now

    def start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap_loop, name="runs-reaper", daemon=True)
            self._reaper.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the reaper; close the runs still open as errors (best effort); close the channel."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout)
            self._reaper = None
        left = self.table.claim_all()
        if left:
            spans, results = [], []
            for run in left:
                span, closed = self._closing_span(run, None, "the agentmon API stopped before the run ended",
                                                  "run_interrupted", None, expired=True)
                spans.append(span)
                results.append((run, closed))
            try:
                self.exporter.send(spans)
                log.info("closed %d open runs as interrupted", len(left))
            except (EnricherUnavailable, EnricherRejected) as error:
                log.warning("%d open runs are lost at shutdown: %s", len(left), error)
            for run, closed in results:
                self.table.close(run, closed)
        self.exporter.close()

    @property
    def reaper_alive(self) -> bool:
        return self._reaper is not None and self._reaper.is_alive()

    # ---- internals -------------------------------------------------------------------------

    def _reap_loop(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self.reap()
            except Exception:  # never lose the reaper
                log.exception("runs reaper error; carrying on")

    def _close(self, run: OpenRun, *, output_text: str | None, error: str | None,
               extra: dict[str, Any] | None) -> ClosedRun:
        span, closed = self._closing_span(run, output_text, error, None, extra, expired=False)
        self.exporter.send([span])
        self.table.close(run, closed)
        return closed

    def _closing_span(self, run: OpenRun, output_text: str | None, error: str | None, error_type: str | None,
                      extra: dict[str, Any] | None, *, expired: bool):
        elapsed = max(0.0, self._clock() - run.started)
        end_ns = run.start_ns + int(elapsed * 1e9)
        span = run_span(
            run.agent, run.trace_id, run.span_id, run.parent_span_id, run.start_ns, end_ns,
            attributes={**run.attributes, **(extra or {})}, input_text=run.input_text, output_text=output_text,
            error=error, error_type=error_type,
        )
        status = "error" if error is not None else "ok"
        return span, ClosedRun(run.agent.id, expired, (end_ns - run.start_ns) / 1e6, status)
