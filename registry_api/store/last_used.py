"""Batched ``agents.last_used_at`` updates.

Callers mark an agent as used as often as they like (an O(1) dict write); a
background thread writes the latest time of each agent every few seconds, so the
registry sees one UPDATE batch per interval instead of one write per span.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from registry_api.store.agents import AgentStore

log = logging.getLogger(__name__)


class LastUsedRecorder:
    def __init__(self, store: AgentStore, interval_seconds: float = 5.0) -> None:
        self._store = store
        self._interval = interval_seconds
        self._pending: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mark_used(self, agent_id: str, when: datetime | None = None) -> None:
        when = when or datetime.now(UTC)
        with self._lock:
            previous = self._pending.get(agent_id)
            if previous is None or when > previous:
                self._pending[agent_id] = when

    def pending(self) -> dict[str, datetime]:
        with self._lock:
            return dict(self._pending)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="last-used-recorder", daemon=True)
            self._thread.start()

    def flush(self) -> bool:
        """Write what is pending now. Returns False (and keeps it pending) if the database failed."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return True
        try:
            self._store.record_last_used(batch)
        except Exception:  # the database is down: keep the times and try again next interval
            log.warning("could not record last_used_at for %d agents; will retry", len(batch), exc_info=True)
            for agent_id, when in batch.items():
                self.mark_used(agent_id, when)
            return False
        return True

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval + 5)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()
