"""The runs open through the API, and the ones recently closed.

Both are bounded: at most ``max_open`` open runs (``TooManyRuns`` beyond), and the last
``max_closed`` closed ones are remembered (least recently closed out first) so that a
second end of a run gets a clear answer rather than "not found". A run being closed is
*claimed* first, so an end and the expiry reaper never close one run twice; when sending
its span fails the claim is released and the run is open again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from registry_api.runs.spans import RunAgent

RunKey = tuple[bytes, bytes]  # (trace id, span id)


class RunError(Exception):
    pass


class TooManyRuns(RunError):
    def __init__(self, limit: int, retry_after: int = 5) -> None:
        super().__init__(f"{limit} runs are open already (AGENTMON_RUNS_MAX_OPEN); end some or retry later")
        self.retry_after = retry_after


class RunNotFound(RunError):
    pass


class RunClosed(RunError):
    def __init__(self, message: str, expired: bool) -> None:
        super().__init__(message)
        self.expired = expired


class RunOfAnotherAgent(RunError):
    pass


class RunBusy(RunError):
    """Another request is closing this run right now."""


@dataclass(slots=True)
class OpenRun:
    agent: RunAgent
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    start_ns: int  # wall clock, for the span
    started: float  # monotonic, for its duration
    deadline: float  # monotonic
    input_text: str | None
    attributes: dict[str, Any]
    announced: float  # monotonic: last (re-)announcement
    closing: bool = False

    @property
    def key(self) -> RunKey:
        return (self.trace_id, self.span_id)


@dataclass(frozen=True, slots=True)
class ClosedRun:
    agent_id: str
    expired: bool
    duration_ms: float
    status: str  # "ok" or "error"


def _describe(key: RunKey) -> str:
    return f"run {key[0].hex()}/{key[1].hex()}"


class RunTable:
    def __init__(self, *, max_open: int, max_closed: int) -> None:
        self._max_open = max_open
        self._max_closed = max_closed
        self._lock = threading.Lock()
        # Insertion order is deadline order (one max duration for all), so expiry scans stop early.
        self._open: dict[RunKey, OpenRun] = {}
        self._closed: OrderedDict[RunKey, ClosedRun] = OrderedDict()

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def closed_count(self) -> int:
        return len(self._closed)

    def add(self, run: OpenRun) -> bool:
        """Open ``run``; False if its ids are taken (draw new ones). Raises TooManyRuns."""
        with self._lock:
            if len(self._open) >= self._max_open:
                raise TooManyRuns(self._max_open)
            if run.key in self._open or run.key in self._closed:
                return False
            self._open[run.key] = run
            return True

    def discard(self, key: RunKey) -> None:
        """Forget a run that never really started (its announcement could not be sent)."""
        with self._lock:
            self._open.pop(key, None)

    def claim(self, key: RunKey, agent_id: str) -> OpenRun:
        """The open run ``key`` of ``agent_id``, claimed for closing."""
        with self._lock:
            run = self._open.get(key)
            if run is None:
                closed = self._closed.get(key)
                if closed is None:
                    raise RunNotFound(f"{_describe(key)} is not open (never started, or closed long ago)")
                if closed.agent_id != agent_id:
                    raise RunOfAnotherAgent(f"{_describe(key)} belongs to another agent")
                if closed.expired:
                    raise RunClosed(f"{_describe(key)} expired: it was not ended in time and was closed "
                                    "as an error", expired=True)
                raise RunClosed(f"{_describe(key)} has already ended", expired=False)
            if run.agent.id != agent_id:
                raise RunOfAnotherAgent(f"{_describe(key)} belongs to another agent")
            if run.closing:
                raise RunBusy(f"{_describe(key)} is being closed right now (by another request, or because it "
                              "expired); retry to learn how it ended")
            run.closing = True
            return run

    def release(self, run: OpenRun) -> None:
        """Closing failed: the run is open again (an end may be retried)."""
        with self._lock:
            run.closing = False

    def close(self, run: OpenRun, closed: ClosedRun) -> None:
        with self._lock:
            self._open.pop(run.key, None)
            self._closed[run.key] = closed
            self._closed.move_to_end(run.key)
            while len(self._closed) > self._max_closed:
                self._closed.popitem(last=False)

    def claim_due(self, now: float) -> list[OpenRun]:
        """Claim every open run past its deadline (for the reaper)."""
        due = []
        with self._lock:
            for run in self._open.values():
                if run.deadline > now:
                    break
                if not run.closing:
                    run.closing = True
                    due.append(run)
        return due

    def stale_announcements(self, now: float, every: float) -> list[OpenRun]:
        """Open runs last announced more than ``every`` seconds ago."""
        with self._lock:
            return [run for run in self._open.values() if not run.closing and now - run.announced >= every]

    def claim_all(self) -> list[OpenRun]:
        """Claim every open run not being closed already (at shutdown)."""
        with self._lock:
            runs = [run for run in self._open.values() if not run.closing]
            for run in runs:
                run.closing = True
            return runs
