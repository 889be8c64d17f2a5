"""When did the stored spans last change? One cached answer shared by every live page."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ChangeFeed:
    """The data version (see StatsStore.data_version), asked of ClickHouse at most once per
    ``min_interval`` seconds however many dashboards are open - failures included, so an
    outage is not polled harder. Callers never queue behind a slow read: while one is in
    flight, the others get the last answer."""

    def __init__(self, read_version: Callable[[], int], *, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read_version
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._reading = False
        self._version: int | None = None
        self._error: Exception | None = None
        self._read_at = float("-inf")

    def version(self) -> int:
        with self._lock:
            now = self._clock()
            due = now - self._read_at >= self._min_interval
            if not due or self._reading:
                return self._last()
            self._reading, self._read_at = True, now
        try:
            version, error = self._read(), None
        except Exception as failure:
            version, error = None, failure
        with self._lock:
            self._reading = False
            self._error = error
            if error is None:
                self._version = version
            return self._last()

    def _last(self) -> int:
        if self._error is not None:
            raise self._error
        if self._version is None:  # a read is in flight and none has finished yet
            raise LookupError("no data version yet")
        return self._version
